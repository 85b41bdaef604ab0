package audit_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/state"
)

// writeBundle exports the events since since into a new directory.
func (e *env) writeBundle(since time.Time) (string, audit.BundleManifest) {
	e.t.Helper()
	dir := filepath.Join(e.t.TempDir(), "bundle")
	m, err := audit.WriteBundle(context.Background(), dir, audit.BundleOptions{Source: e.source(), Checkpointer: e.cp,
		Keys: e.key.AuthorizedKeys(), Since: since})
	if err != nil {
		e.t.Fatal(err)
	}
	return dir, m
}

func verifyBundle(t *testing.T, dir string, keys *audit.Keyring) *audit.Report {
	t.Helper()
	b, err := audit.OpenBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(context.Background(), b, audit.VerifyOptions{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// editLines rewrites a bundle file line by line; edit returns the new line,
// or "" to drop it.
func editLines(t *testing.T, path string, edit func(n int, line string) string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for n := 1; sc.Scan(); n++ {
		if l := edit(n, sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	f.Close()
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBundleVerifiesOffline: a bundle of the whole chain, and one of a
// later part of it (tied to the chain by the checkpoint before it), verify
// with nothing but the bundle and the public key, after the stores are
// deleted; every kind of change to a bundle is found.
func TestBundleVerifiesOffline(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			e := newEnv(t, b)
			alice, bob, carol := populate(t, e)
			whole, m := e.writeBundle(time.Time{})
			if m.From != 1 || m.Sessions != 3 || m.Revocations != 1 || m.Checkpoints < 2 {
				t.Errorf("whole bundle manifest %+v", m)
			}
			row, _ := e.st.GetSession(context.Background(), carol)
			part, pm := e.writeBundle(row.Start)
			if pm.From <= 1 || pm.Sessions != 1 {
				t.Errorf("partial bundle manifest %+v; want it to start after a checkpoint, with carol's session", pm)
			}
			// The stores are gone; the bundles stand alone.
			e.st.Close()
			if err := os.RemoveAll(e.dir); err != nil {
				t.Fatal(err)
			}
			mustBeIntact(t, verifyBundle(t, whole, e.keys))
			rep := verifyBundle(t, part, e.keys)
			mustBeIntact(t, rep)
			if rep.First != pm.From || rep.Sealed != 1 {
				t.Errorf("partial report %+v", rep)
			}

			copyDir := func() string {
				t.Helper()
				dst := filepath.Join(t.TempDir(), "copy")
				if err := os.CopyFS(dst, os.DirFS(whole)); err != nil {
					t.Fatal(err)
				}
				return dst
			}
			tests := []struct {
				name   string
				tamper func(dir string)
				want   []string
			}{
				{"events rewritten and re-hashed", func(dir string) {
					prev := state.GenesisPrev
					editLines(t, filepath.Join(dir, "events.jsonl"), func(_ int, line string) string {
						var ev state.Event
						if err := json.Unmarshal([]byte(line), &ev); err != nil {
							t.Fatal(err)
						}
						if ev.Actor == "bob" {
							ev.Actor = "mallory"
						}
						ev.Prev = prev
						ev.Details = reDecode(t, ev.Details)
						ev.Hash, _ = state.Hash(ev)
						prev = ev.Hash
						b, _ := json.Marshal(ev)
						return string(b)
					})
				}, []string{"the event's hash differs from the checkpoint signed", "were rewritten"}},
				{"last checkpoint removed", func(dir string) {
					var lines int
					editLines(t, filepath.Join(dir, "checkpoints.jsonl"), func(n int, l string) string { lines = n; return l })
					editLines(t, filepath.Join(dir, "checkpoints.jsonl"), func(n int, l string) string {
						if n == lines {
							return ""
						}
						return l
					})
				}, []string{"are not covered by a signed checkpoint", "nothing proves"}},
				{"tail cut", func(dir string) {
					editLines(t, filepath.Join(dir, "events.jsonl"), func(n int, l string) string {
						if n > 5 {
							return ""
						}
						return l
					})
				}, []string{"the chain ends at seq 5", "were cut from the tail"}},
				{"session row removed", func(dir string) {
					editLines(t, filepath.Join(dir, "sessions.jsonl"), func(_ int, l string) string {
						if strings.Contains(l, bob) {
							return ""
						}
						return l
					})
				}, []string{"session " + bob, "the index row is missing"}},
				{"session row edited", func(dir string) {
					editLines(t, filepath.Join(dir, "sessions.jsonl"), func(_ int, l string) string {
						return strings.Replace(l, `"target":"web-1"`, `"target":"web-7"`, 1)
					})
				}, []string{"session " + alice, `target: signed "web-1", index "web-7"`}},
				{"revocation removed", func(dir string) {
					if err := os.WriteFile(filepath.Join(dir, "revocations.jsonl"), nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}, []string{"revocation of certificate serial 4242", "missing from the revocations table"}},
				{"checkpoint forged with another key", func(dir string) {
					other := auditKey(t, noCA())
					cp := audit.Checkpoint{Record: audit.RecordCheckpoint, Seq: 1, Hash: strings.Repeat("0", 64)}
					env, _ := audit.Sign(other, cp)
					b, _ := json.Marshal(env)
					f, _ := os.OpenFile(filepath.Join(dir, "checkpoints.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
					f.Write(append(b, '\n'))
					f.Close()
				}, []string{"bundle checkpoints.jsonl", "signed by a key that is not trusted"}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					dir := copyDir()
					tt.tamper(dir)
					rep := verifyBundle(t, dir, e.keys)
					t.Logf("problems:\n  %s", strings.Join(rep.Problems, "\n  "))
					wantProblem(t, rep, tt.want...)
				})
			}
		})
	}
}

// reDecode turns details decoded by encoding/json (float64 numbers) back
// into what the store decodes (json.Number), so re-hashing matches.
func reDecode(t *testing.T, d map[string]any) map[string]any {
	t.Helper()
	if d == nil {
		return nil
	}
	b, _ := json.Marshal(d)
	var out map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
