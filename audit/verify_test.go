package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/state"
)

// populate records two sessions, revokes a certificate and takes a
// checkpoint, then adds a third session and events after it (the
// uncovered tail). It returns the sealed sessions in order. carol's is
// recorded without an identity key, as postern recorded before sessions
// had keys: its seal record is the one signed then.
func populate(t *testing.T, e *env) (alice, bob, carol string) {
	t.Helper()
	alice = e.record("alice", "web-1").ID
	e.event(state.EventAuthSuccess, "alice")
	if err := e.st.Revoke(context.Background(), 4242, "laptop stolen", "admin"); err != nil {
		t.Fatal(err)
	}
	bob = e.record("bob", "db-1").ID
	e.checkpoint()
	carol = e.recordKey("carol", "", "web-2").ID
	e.event(state.EventChannelOpen, "carol")
	e.checkpoint()
	return alice, bob, carol
}

// sealSeq returns the seq of id's session.sealed event.
func sealSeq(t *testing.T, e *env, id string) int64 {
	t.Helper()
	row, err := e.st.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return row.SealSeq
}

// TestVerifyHealthy: an untouched store verifies, with every recording,
// revocation, checkpoint and the audit file checked.
func TestVerifyHealthy(t *testing.T) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			e := newEnv(t, b)
			populate(t, e)
			rep := e.verify()
			mustBeIntact(t, rep)
			if rep.Sealed != 3 || rep.Revocations != 1 || rep.Covered != rep.Last || rep.Checkpoints != 2 {
				t.Errorf("report %+v; want 3 sealed, 1 revocation, 2 checkpoints covering the chain", rep)
			}
			if len(rep.Files) != 1 || rep.Files[0].Events != int(rep.Events) || rep.Files[0].Segments != 1 {
				t.Errorf("audit file %+v; want every event in one segment", rep.Files)
			}
		})
	}
}

// TestVerifyDetectsTampering tampers, as someone with write access to the
// state store and the recording store would, in each way listed in the
// issue, and expects a problem naming the row or sequence number and what
// changed.
func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, e *env, alice, bob, carol string) [][]string
	}{
		{"zero seal_seq", func(t *testing.T, e *env, alice, _, _ string) [][]string {
			seq := sealSeq(t, e, alice)
			e.exec(`UPDATE sessions SET seal_seq = 0 WHERE id = ?`, alice)
			return [][]string{{"session " + alice, "seal_seq is 0 in the index", fmt.Sprintf("sealed at seq %d", seq)}}
		}},
		{"delete a session row with its cast", func(t *testing.T, e *env, _, bob, _ string) [][]string {
			row, _ := e.st.GetSession(context.Background(), bob)
			e.exec(`DELETE FROM sessions WHERE id = ?`, bob)
			os.Remove(e.objectPath(row.Object))
			os.Remove(e.objectPath(strings.TrimSuffix(row.Object, ".cast") + ".json"))
			return [][]string{
				{"session " + bob, fmt.Sprintf("sealed at seq %d", row.SealSeq), "index row is missing"},
				{"session " + bob, "recording " + row.Object + " is missing"},
				{"counts 2 sealed recordings", "the sessions index has 1"},
			}
		}},
		{"edit session metadata in the index", func(t *testing.T, e *env, alice, _, _ string) [][]string {
			e.exec(`UPDATE sessions SET identity = 'mallory', meta = '{"format":"v2","width":80}' WHERE id = ?`, alice)
			return [][]string{{"session " + alice, "index row differs from the signed seal", `identity: signed "alice", index "mallory"`, "meta_sha256"}}
		}},
		{"change a session's identity key in the index", func(t *testing.T, e *env, alice, _, _ string) [][]string {
			// Handing alice's recording to mallory for replay and search.
			e.exec(`UPDATE sessions SET identity_key = 'corp:mallory' WHERE id = ?`, alice)
			return [][]string{{"session " + alice, "index row differs from the signed seal", `identity_key: signed "corp:alice", index "corp:mallory"`}}
		}},
		{"give a session sealed without a key one", func(t *testing.T, e *env, _, _, carol string) [][]string {
			e.exec(`UPDATE sessions SET identity_key = 'corp:mallory' WHERE id = ?`, carol)
			return [][]string{{"session " + carol, "index row differs from the signed seal", `identity_key: signed "", index "corp:mallory"`}}
		}},
		{"edit the identity key in the metadata JSON", func(t *testing.T, e *env, _, bob, _ string) [][]string {
			row, _ := e.st.GetSession(context.Background(), bob)
			p := e.objectPath(strings.TrimSuffix(row.Object, ".cast") + ".json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"identity_key": "corp:bob"`) {
				t.Fatalf("metadata JSON without the identity key:\n%s", b)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(b), `"identity_key": "corp:bob"`, `"identity_key": "corp:mallory"`, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			return [][]string{{"session " + bob, "metadata " + strings.TrimSuffix(row.Object, ".cast") + ".json", `identity_key: signed "corp:bob", metadata "corp:mallory"`}}
		}},
		{"edit the metadata JSON", func(t *testing.T, e *env, _, _, carol string) [][]string {
			row, _ := e.st.GetSession(context.Background(), carol)
			p := e.objectPath(strings.TrimSuffix(row.Object, ".cast") + ".json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(b), `"target": "web-2"`, `"target": "web-9"`, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			return [][]string{{"session " + carol, "metadata " + strings.TrimSuffix(row.Object, ".cast") + ".json", `target: signed "web-2", metadata "web-9"`}}
		}},
		{"edit a cast", func(t *testing.T, e *env, _, bob, _ string) [][]string {
			row, _ := e.st.GetSession(context.Background(), bob)
			if err := os.WriteFile(e.objectPath(row.Object), []byte("{}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return [][]string{{"session " + bob, "recording " + row.Object + " differs from its sealed digest", "size sealed"}}
		}},
		{"edit an event in place", func(t *testing.T, e *env, _, _, _ string) [][]string {
			e.exec(`UPDATE audit_events SET actor = 'mallory' WHERE seq = 2`)
			return [][]string{{"seq 2 (session.end)", "stored hash does not match"}}
		}},
		{"rewrite events and recompute the chain", func(t *testing.T, e *env, alice, _, _ string) [][]string {
			// Rename the actor of every event of alice's session and re-hash
			// the whole chain: every link checks; the signed checkpoints do not.
			e.rewriteChain(func(ev *state.Event) bool {
				if ev.Actor == "alice" {
					ev.Actor = "mallory"
				}
				return true
			})
			e.exec(`DELETE FROM audit_checkpoints`) // and hide the store's own copies
			return [][]string{
				{"the event's hash differs from the checkpoint signed", "storage audit/checkpoints/", "were rewritten"},
				{"audit file", "differs from the chain's event"},
			}
		}},
		{"delete a session and its events, re-hashing the chain", func(t *testing.T, e *env, alice, _, _ string) [][]string {
			e.rewriteChain(func(ev *state.Event) bool { return ev.Session != alice })
			e.exec(`DELETE FROM sessions WHERE id = ?`, alice)
			e.exec(`DELETE FROM audit_checkpoints`)
			return [][]string{{"differs from the checkpoint signed", "were rewritten"}}
		}},
		{"cut the tail", func(t *testing.T, e *env, _, _, carol string) [][]string {
			head, _, _ := e.st.Head(context.Background())
			cut := sealSeq(t, e, carol) - 3
			e.exec(`DELETE FROM audit_events WHERE seq > ?`, cut)
			e.exec(`DELETE FROM sessions WHERE id = ?`, carol)
			e.exec(`DELETE FROM audit_checkpoints`)
			return [][]string{
				{fmt.Sprintf("the chain ends at seq %d", cut), fmt.Sprintf("covers seq %d", head), fmt.Sprintf("%d events were cut from the tail", head-cut)},
				{"audit file", fmt.Sprintf("beyond the end of the chain (seq %d)", cut), "cut from its tail"},
			}
		}},
		{"delete a revocation row", func(t *testing.T, e *env, _, _, _ string) [][]string {
			evs, _ := e.st.ListEvents(context.Background(), state.EventFilter{Type: state.EventCertRevoked})
			e.exec(`DELETE FROM revocations WHERE serial = 4242`)
			return [][]string{{"revocation of certificate serial 4242", fmt.Sprintf("(seq %d)", evs[0].Seq), "missing from the revocations table"}}
		}},
		{"add a revocation row", func(t *testing.T, e *env, _, _, _ string) [][]string {
			e.exec(`INSERT INTO revocations (serial, reason, revoked_by, time) VALUES (77, 'x', 'y', '2026-01-01T00:00:00.000000Z')`)
			return [][]string{{"revocation of certificate serial 77 has no cert.revoked event"}}
		}},
		{"forge a checkpoint in the bucket", func(t *testing.T, e *env, _, _, _ string) [][]string {
			cp := audit.Checkpoint{Record: audit.RecordCheckpoint, Seq: 3, Hash: strings.Repeat("ab", 32)}
			b, _ := json.Marshal(cp)
			env := audit.Envelope{Record: string(b), Key: e.key.KeyID(), Sig: "AAAA"}
			body, _ := json.Marshal(env)
			if err := e.store.Put(context.Background(), "audit/checkpoints/2026/01/01/00000000000000000003.json", strings.NewReader(string(body)), int64(len(body)), "application/json"); err != nil {
				t.Fatal(err)
			}
			return [][]string{{"storage audit/checkpoints/2026/01/01/00000000000000000003.json", "signature does not verify"}}
		}},
	}
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					e := newEnv(t, b)
					alice, bob, carol := populate(t, e)
					mustBeIntact(t, e.verify())
					want := tt.tamper(t, e, alice, bob, carol)
					rep := e.verify()
					if rep.OK() {
						t.Fatal("verify found nothing")
					}
					t.Logf("problems:\n  %s", strings.Join(rep.Problems, "\n  "))
					for _, parts := range want {
						wantProblem(t, rep, parts...)
					}
				})
			}
		})
	}
}

// TestVerifyStaleTail: with both stores in hand and no Object Lock, an
// attacker can delete every checkpoint and anchor along with the events;
// events that no checkpoint covers although they are older than three
// checkpoint intervals then tell that checkpoints were deleted.
func TestVerifyStaleTail(t *testing.T) {
	e := newEnv(t, "sqlite")
	populate(t, e)
	e.exec(`DELETE FROM audit_checkpoints`)
	if err := os.RemoveAll(e.objectPath("audit")); err != nil {
		t.Fatal(err)
	}
	verify := func(now time.Time) *audit.Report {
		t.Helper()
		rep, err := audit.Verify(context.Background(), e.source(), audit.VerifyOptions{Keys: e.keys, CheckpointInterval: 10 * time.Second,
			Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(time.Now()); !rep.OK() || len(rep.Notes) == 0 {
		t.Fatalf("fresh uncovered events: %+v; want only a note", rep)
	}
	head, _, _ := e.st.Head(context.Background())
	rep := verify(time.Now().Add(2 * time.Minute))
	wantProblem(t, rep, fmt.Sprintf("events 1 to %d are not covered by a signed checkpoint", head), "checkpoints were deleted")
}

// TestVerifyMissingMetadata: a recording's metadata JSON may be missing for
// the moment between the seal's commit and its store; after that it is a
// problem.
func TestVerifyMissingMetadata(t *testing.T) {
	e := newEnv(t, "sqlite")
	s := e.record("alice", "web-1")
	if err := os.Remove(e.objectPath(s.MetaObject)); err != nil {
		t.Fatal(err)
	}
	verify := func(now time.Time) *audit.Report {
		t.Helper()
		rep, err := audit.Verify(context.Background(), e.source(), audit.VerifyOptions{Keys: e.keys, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(time.Now()); !rep.OK() || !strings.Contains(strings.Join(rep.Notes, "\n"), "is not stored yet") {
		t.Fatalf("just sealed: %+v; want a note", rep)
	}
	wantProblem(t, verify(time.Now().Add(2*time.Minute)), "session "+s.ID, "metadata "+s.MetaObject+" is missing")
}
