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
// the object it came from.
func (a *StorageAnchor) Checkpoints(ctx context.Context) ([]FoundCheckpoint, error) {
	keys, err := a.Objects.List(ctx, a.prefix())
	if err != nil {
		return nil, fmt.Errorf("list anchored checkpoints: %w", err)
	}
	out := make([]FoundCheckpoint, 0, len(keys))
	for _, k := range keys {
		rc, err := a.Objects.Open(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("read anchored checkpoint %s: %w", k, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("read anchored checkpoint %s: %w", k, err)
		}
		fc := FoundCheckpoint{Where: "storage " + k}
		if err := json.Unmarshal(b, &fc.Envelope); err != nil {
			fc.Err = "not a signed checkpoint"
		}
		out = append(out, fc)
	}
	return out, nil
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
}
