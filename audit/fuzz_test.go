package audit_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/internal/config"
)

// FuzzCheckpointLine feeds arbitrary lines to what reads checkpoints from
// files (log sink exports, bundles): nothing panics, and nothing but the
// one envelope the seed signed ever verifies.
func FuzzCheckpointLine(f *testing.F) {
	key := auditKey(f, config.CA{})
	cp := audit.Checkpoint{Record: audit.RecordCheckpoint, Seq: 7, Hash: "ab", Time: time.Unix(1700000000, 0).UTC(), Sealed: 1}
	env, err := audit.Sign(key, cp)
	if err != nil {
		f.Fatal(err)
	}
	ring, err := audit.NewKeyring(key.Trusted())
	if err != nil {
		f.Fatal(err)
	}
	signed, _ := json.Marshal(env)
	wrapped, _ := json.Marshal(map[string]any{"type": audit.CheckpointType, "seq": 7, "envelope": env})
	f.Add(string(signed))
	f.Add(string(wrapped))
	f.Add("<134>1 2026-01-01T00:00:00Z host postern - - - " + string(wrapped))
	f.Add(`{"record":"{}","key":"SHA256:x","sig":"AAAA"}`)
	f.Add(`{"envelope":{"record":""}}`)
	f.Add("{")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, line string) {
		p := filepath.Join(dir, "line.jsonl")
		if err := os.WriteFile(p, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		found, err := audit.ReadCheckpoints(p)
		if err != nil {
			return
		}
		for _, fc := range found {
			var got audit.Checkpoint
			if ring.Open(fc.Envelope, &got) == nil && (fc.Envelope.Record != env.Record || got != cp) {
				t.Fatalf("a record that was never signed verified: %q", fc.Envelope.Record)
			}
		}
	})
}
