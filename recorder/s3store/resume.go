package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Resumed is an unfinished multipart upload that another process began
// (a replica that died while streaming a recording), taken over to be
// completed: its parts stay in the bucket, and Complete appends the rest.
type Resumed struct {
	m    *multipart
	size int64
}

// Size returns the number of bytes the upload's parts hold. With
// Options.PartDelimiter set they end just after a delimiter.
func (r *Resumed) Size() int64 { return r.size }

// Complete sends n more bytes from body() (a fresh reader for each attempt)
// as the last part, if n > 0, and completes the object.
func (r *Resumed) Complete(ctx context.Context, body func() io.ReadSeeker, n int64) error {
	if n > 0 {
		if err := r.m.send(ctx, body, n); err != nil {
			return fmt.Errorf("resume upload %s: %w", r.m.key, err)
		}
	}
	if err := r.m.complete(ctx); err != nil {
		return fmt.Errorf("resume upload %s: %w", r.m.key, err)
	}
	r.m.reset()
	return nil
}

// Abort abandons the upload and its parts.
func (r *Resumed) Abort() { r.m.abort() }

// Resume takes over the unfinished multipart upload of key with the most
// bytes, aborting any other of the same key (they are older attempts), and
// returns it; the error wraps ErrNotFound if there is none with a part.
// Its parts must be numbered from 1 without a gap, as Upload sends them;
// otherwise it is aborted and treated as absent.
func (s *Store) Resume(ctx context.Context, key string) (*Resumed, error) {
	full := s.cfg.key(key)
	var ids []string
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)}
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list multipart uploads of %s: %w", key, err)
		}
		for _, u := range out.Uploads {
			if aws.ToString(u.Key) == full {
				ids = append(ids, aws.ToString(u.UploadId))
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
	var best *Resumed
	for _, id := range ids {
		m := &multipart{s: s, key: full, id: id}
		size, err := m.listParts(ctx)
		if err != nil && !errors.Is(err, errPartsGap) {
			return nil, err
		}
		if err == nil && len(m.parts) > 0 && (best == nil || size > best.size) {
			if best != nil {
				best.m.abort()
			}
			best = &Resumed{m: m, size: size}
			continue
		}
		m.abort()
	}
	if best == nil {
		return nil, fmt.Errorf("multipart upload of %s: %w", key, ErrNotFound)
	}
	return best, nil
}

// errPartsGap means an upload's parts are not numbered 1..n.
var errPartsGap = errors.New("parts are not contiguous")

// listParts fills m.parts from the bucket and returns their total size.
func (m *multipart) listParts(ctx context.Context) (int64, error) {
	s := m.s
	in := &s3.ListPartsInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(m.key), UploadId: aws.String(m.id)}
	var size int64
	for {
		out, err := s.client.ListParts(ctx, in)
		if isNoSuchUpload(err) {
			return 0, errPartsGap // gone meanwhile: nothing to resume
		}
		if err != nil {
			return 0, fmt.Errorf("list parts of %s: %w", m.key, err)
		}
		for _, p := range out.Parts {
			if aws.ToInt32(p.PartNumber) != int32(len(m.parts)+1) {
				return 0, errPartsGap
			}
			m.parts = append(m.parts, types.CompletedPart{ETag: p.ETag, PartNumber: p.PartNumber, ChecksumCRC32: p.ChecksumCRC32})
			size += aws.ToInt64(p.Size)
		}
		if !aws.ToBool(out.IsTruncated) {
			return size, nil
		}
		in.PartNumberMarker = out.NextPartNumberMarker
	}
}
