package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"time"
)

// Objects is the subset of a recording store (recorder.Store, with List)
// that audit reads and writes: recordings and their metadata, anchored
// checkpoints and export objects. A missing object's error wraps
// fs.ErrNotExist.
type Objects interface {
	// Put stores size bytes from r under key.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Open returns the object's contents.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns the keys under prefix (a "directory", no trailing
	// slash), sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// VersionedObjects is implemented by stores that keep versions (an S3
// bucket with versioning, which Object Lock requires): there an overwrite
// adds a version and a delete adds a delete marker, while the versions
// under retention stay. Reading every version finds what a writer to the
// bucket hid.
type VersionedObjects interface {
	// ListVersions returns every version of the objects under prefix,
	// delete markers included.
	ListVersions(ctx context.Context, prefix string) ([]ObjectVersion, error)
	// OpenVersion returns one version of an object.
	OpenVersion(ctx context.Context, key, id string) (io.ReadCloser, error)
}

// ObjectVersion is one version of an object.
type ObjectVersion struct {
	// Key is the object's key.
	Key string
	// ID is the version id.
	ID string
	// DeleteMarker reports whether the version is a delete marker.
	DeleteMarker bool
	// Latest reports whether it is the current version.
	Latest bool
}

// CheckpointPrefix is where StorageAnchor writes checkpoints in the
// recording store.
const CheckpointPrefix = "audit/checkpoints"

// checkpointKey is the object key of the checkpoint of seq taken at t:
// audit/checkpoints/YYYY/MM/DD/<seq, 20 digits>.json.
func checkpointKey(prefix string, seq int64, t time.Time) string {
	return path.Join(prefix, t.UTC().Format("2006/01/02"), fmt.Sprintf("%020d.json", seq))
}

// StorageAnchor writes every checkpoint as an object of the recording store
// (with the store's Object Lock retention, if it has one), where the
// operator of the state store cannot rewrite it.
type StorageAnchor struct {
	// Objects is the store.
	Objects Objects
	// Prefix is the key prefix; CheckpointPrefix if empty.
	Prefix string
}

func (a *StorageAnchor) prefix() string {
	if a.Prefix == "" {
		return CheckpointPrefix
	}
	return a.Prefix
}

// Name returns "storage".
func (a *StorageAnchor) Name() string { return "storage" }

// Anchor stores env as audit/checkpoints/YYYY/MM/DD/<seq>.json.
func (a *StorageAnchor) Anchor(ctx context.Context, cp Checkpoint, env Envelope) error {
	b, err := json.Marshal(env)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return a.Objects.Put(ctx, checkpointKey(a.prefix(), cp.Seq, cp.Time), bytes.NewReader(b), int64(len(b)), "application/json")
}

// Checkpoints reads every anchored checkpoint back, unverified, each with
// the object it came from. In a versioned bucket it reads every version,
// so that a checkpoint overwritten or deleted by a writer to the bucket is
// still found (and the delete markers are noted); it falls back to the
// current objects where the bucket cannot list versions.
func (a *StorageAnchor) Checkpoints(ctx context.Context) ([]FoundCheckpoint, error) {
	if vo, ok := a.Objects.(VersionedObjects); ok {
		vs, err := vo.ListVersions(ctx, a.prefix())
		if err == nil {
			return a.readVersions(ctx, vo, vs)
		}
	}
	keys, err := a.Objects.List(ctx, a.prefix())
	if err != nil {
		return nil, fmt.Errorf("list anchored checkpoints: %w", err)
	}
	out := make([]FoundCheckpoint, 0, len(keys))
	for _, k := range keys {
		fc, err := readAnchored(a.Objects.Open(ctx, k))
		if err != nil {
			return nil, fmt.Errorf("read anchored checkpoint %s: %w", k, err)
		}
		fc.Where = "storage " + k
		out = append(out, fc)
	}
	return out, nil
}

func (a *StorageAnchor) readVersions(ctx context.Context, vo VersionedObjects, vs []ObjectVersion) ([]FoundCheckpoint, error) {
	out := make([]FoundCheckpoint, 0, len(vs))
	for _, v := range vs {
		where := "storage " + v.Key
		if v.DeleteMarker {
			out = append(out, FoundCheckpoint{Where: where, Deleted: v.ID})
			continue
		}
		var fc FoundCheckpoint
		var err error
		if v.ID == "" || v.ID == "null" { // a bucket without versioning
			fc, err = readAnchored(a.Objects.Open(ctx, v.Key))
		} else {
			fc, err = readAnchored(vo.OpenVersion(ctx, v.Key, v.ID))
		}
		if err != nil {
			return nil, fmt.Errorf("read anchored checkpoint %s version %s: %w", v.Key, v.ID, err)
		}
		fc.Where = where
		if !v.Latest {
			fc.Where += " (version " + v.ID + ", no longer current)"
		}
		out = append(out, fc)
	}
	return out, nil
}

// readAnchored reads one anchored checkpoint object.
func readAnchored(rc io.ReadCloser, err error) (FoundCheckpoint, error) {
	if err != nil {
		return FoundCheckpoint{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return FoundCheckpoint{}, err
	}
	var fc FoundCheckpoint
	if json.Unmarshal(b, &fc.Envelope) != nil || fc.Envelope.Record == "" {
		fc.Err = "not a signed checkpoint"
	}
	return fc, nil
}

// FoundCheckpoint is a checkpoint as found in one place, not yet verified.
type FoundCheckpoint struct {
	// Envelope is the signed checkpoint.
	Envelope Envelope
	// Where says where it was found ("state store", "storage audit/…",
	// "file.jsonl:12").
	Where string
	// Err is set when what was found there is not an envelope at all.
	Err string
	// Deleted is set, to the marker's version id, for a delete marker
	// found where a checkpoint was anchored: the object was deleted (its
	// retained versions are found on their own).
	Deleted string
}
