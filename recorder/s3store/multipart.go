package s3store

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// errNoSuchUpload means the server forgot the multipart upload (aborted,
// expired by a lifecycle rule): it must start again from the first part.
var errNoSuchUpload = errors.New("multipart upload no longer exists")

// multipart is one multipart upload, created on its first part. It is used
// by one goroutine.
type multipart struct {
	s           *Store
	key         string // bucket key
	contentType string
	id          string
	parts       []types.CompletedPart
}

// send uploads n bytes from body() (a fresh reader for each attempt) as
// the next part, creating the upload first if needed.
func (m *multipart) send(ctx context.Context, body func() io.ReadSeeker, n int64) error {
	s := m.s
	if m.id == "" {
		in := &s3.CreateMultipartUploadInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(m.key), ContentType: aws.String(m.contentType),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32, Tagging: s.tagging(),
		}
		if s.cfg.SSE != "" {
			in.ServerSideEncryption = types.ServerSideEncryption(s.cfg.SSE)
		}
		if s.cfg.KMSKeyID != "" {
			in.SSEKMSKeyId = aws.String(s.cfg.KMSKeyID)
		}
		if s.cfg.StorageClass != "" {
			in.StorageClass = types.StorageClass(s.cfg.StorageClass)
		}
		if s.cfg.ObjectLockMode != "" {
			in.ObjectLockMode = types.ObjectLockMode(s.cfg.ObjectLockMode)
			in.ObjectLockRetainUntilDate = s.retainUntil()
		}
		err := s.retry(ctx, "create_multipart", func(ctx context.Context) error {
			out, err := s.client.CreateMultipartUpload(ctx, in, noRetry)
			if err == nil {
				m.id = aws.ToString(out.UploadId)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	num := int32(len(m.parts) + 1)
	start := time.Now()
	defer func() { s.m.upload.WithLabelValues("upload_part").Observe(time.Since(start).Seconds()) }()
	var part types.CompletedPart
	err := s.retry(ctx, "upload_part", func(ctx context.Context) error {
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(m.key), UploadId: aws.String(m.id),
			PartNumber: aws.Int32(num), Body: body(), ContentLength: aws.Int64(n),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		}, noRetry)
		if isNoSuchUpload(err) {
			return &permanent{errNoSuchUpload}
		}
		if err == nil {
			part = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num), ChecksumCRC32: out.ChecksumCRC32}
		}
		return err
	})
	if err != nil {
		return err
	}
	m.parts = append(m.parts, part)
	return nil
}

// complete completes the upload from the parts sent.
func (m *multipart) complete(ctx context.Context) error {
	s := m.s
	return s.retry(ctx, "complete_multipart", func(ctx context.Context) error {
		_, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(m.key), UploadId: aws.String(m.id),
			MultipartUpload: &types.CompletedMultipartUpload{Parts: m.parts},
		}, noRetry)
		if isNoSuchUpload(err) {
			return &permanent{errNoSuchUpload}
		}
		return err
	})
}

// reset forgets the upload so the next part starts a new one.
func (m *multipart) reset() { m.id, m.parts = "", nil }

// abort aborts the upload, best effort (a stale upload is also aborted by
// the next recovery, and by a bucket lifecycle rule).
func (m *multipart) abort() {
	if m.id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := m.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(m.s.cfg.Bucket), Key: aws.String(m.key), UploadId: aws.String(m.id),
	})
	if err != nil && !isNoSuchUpload(err) {
		m.s.log.Load().Warn("abort multipart upload failed", "key", m.key, "err", shortError(err))
	}
	m.reset()
}

// permanent marks an error that retry must not retry.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }
