package playtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/search"
	"github.com/posternhq/postern/state"
)

// Env is a recorder with its stores in a test's temporary directory.
type Env struct {
	// State is the sessions index and audit log.
	State *state.Store
	// Store holds the recordings.
	Store *recorder.FileStore
	// Recorder records sessions into Store and State.
	Recorder *recorder.Recorder
	// Dir is the temporary directory that holds everything.
	Dir string

	skew atomic.Int64 // nanoseconds the recorder's clock is ahead of time.Now (Advance)
}

// Advance moves the recorder's clock forward by d, so that what is
// recorded next lies d later in the recording.
func (e *Env) Advance(d time.Duration) { e.skew.Add(int64(d)) }

func (e *Env) now() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }

// New builds an Env that t cleans up.
func New(t testing.TB) *Env {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatalf("open state store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	fs, err := recorder.NewFileStore(filepath.Join(dir, "recordings"))
	if err != nil {
		t.Fatalf("open file store: %v", err)
	}
	e := &Env{State: st, Store: fs, Dir: dir}
	rec, err := recorder.New(recorder.Options{Store: fs, State: st, SpoolDir: filepath.Join(dir, "spool"), Now: e.now})
	if err != nil {
		t.Fatalf("new recorder: %v", err)
	}
	e.Recorder = rec
	return e
}

// Step is one thing a recorded session does: output or a marker.
type Step struct {
	// Output is written to the terminal.
	Output string
	// Marker is a marker label.
	Marker string
	// Wait advances the recorder's clock before the step (Env.Record only).
	Wait time.Duration
}

// Start starts recording a session of user (issuer corp, subject user, as
// Users signs for) on target.
func (e *Env) Start(t testing.TB, user, target, command string) *recorder.Session {
	t.Helper()
	return e.StartAs(t, certs.Identity{Issuer: "corp", Subject: user, Username: user}, target, command)
}

// StartAs starts recording a session of id on target.
func (e *Env) StartAs(t testing.TB, id certs.Identity, target, command string) *recorder.Session {
	t.Helper()
	s, err := e.Recorder.Start(context.Background(), recorder.Meta{
		Identity: id.Username, Issuer: id.Issuer, IdentityKey: id.Key(), Role: "ops", Target: target, Login: "deploy",
		Kind: state.KindExec, Command: command, Term: "xterm-256color", Width: 80, Height: 24,
	})
	if err != nil {
		t.Fatalf("start recording: %v", err)
	}
	return s
}

// Play performs steps on a recording session.
func Play(t testing.TB, s *recorder.Session, steps ...Step) {
	t.Helper()
	for _, st := range steps {
		switch {
		case st.Output != "":
			if err := s.Output([]byte(st.Output)); err != nil {
				t.Fatalf("record output: %v", err)
			}
		case st.Marker != "":
			if err := s.Marker(st.Marker); err != nil {
				t.Fatalf("record marker: %v", err)
			}
		}
	}
}

// Finish ends a recording with exit status 0.
func Finish(t testing.TB, s *recorder.Session) *recorder.Sealed {
	t.Helper()
	zero := 0
	sealed, err := s.Finish(context.Background(), recorder.Result{ExitStatus: &zero})
	if err != nil {
		t.Fatalf("finish recording: %v", err)
	}
	return sealed
}

// Record records a whole session and returns its id.
func (e *Env) Record(t testing.TB, user, target, command string, steps ...Step) string {
	t.Helper()
	return e.RecordAs(t, certs.Identity{Issuer: "corp", Subject: user, Username: user}, target, command, steps...)
}

// RecordAs records a whole session of id and returns its id.
func (e *Env) RecordAs(t testing.TB, id certs.Identity, target, command string, steps ...Step) string {
	t.Helper()
	s := e.StartAs(t, id, target, command)
	for _, st := range steps {
		e.Advance(st.Wait)
		Play(t, s, st)
	}
	return Finish(t, s).ID
}

// Users signs requests as users whose certificates a test authority issued.
type Users struct {
	// Authority is the test CA set; APIAuth{Authority: Authority} accepts
	// the users' requests.
	Authority *certs.Authority
	keys      map[string]userKey
}

type userKey struct {
	cert   *ssh.Certificate
	signer ssh.Signer
	priv   ed25519.PrivateKey
}

// NewUsers builds a fresh authority in a temporary directory.
func NewUsers(t testing.TB) *Users {
	t.Helper()
	a, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatalf("load authority: %v", err)
	}
	return &Users{Authority: a, keys: map[string]userKey{}}
}

// key returns user's key and certificate, issuing them on first use for
// the identity of issuer corp and subject user.
func (u *Users) key(t testing.TB, user string) userKey {
	t.Helper()
	if k, ok := u.keys[user]; ok {
		return k
	}
	return u.add(t, user, certs.Identity{Issuer: "corp", Subject: user, Username: user, Kind: certs.KindHuman})
}

// Add issues a key and certificate for id under name, for Sign and
// Profile: several identities may share a username under their own names.
func (u *Users) Add(t testing.TB, name string, id certs.Identity) {
	t.Helper()
	u.add(t, name, id)
}

func (u *Users) add(t testing.TB, name string, id certs.Identity) userKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: uint64(len(u.keys) + 1), CertType: ssh.UserCert, KeyId: id.Username,
		ValidPrincipals: []string{id.Username},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{certs.IdentityExtension: certs.EncodeIdentity(id)}},
	}
	if err := cert.SignCert(rand.Reader, u.Authority.User.Signer()); err != nil {
		t.Fatal(err)
	}
	k := userKey{cert: cert, signer: signer, priv: priv}
	u.keys[name] = k
	return k
}

// Sign adds a Postern-SSH Authorization header for user to r. Users is not
// safe for concurrent use.
func (u *Users) Sign(t testing.TB, r *http.Request, user string) {
	t.Helper()
	k := u.key(t, user)
	if err := certs.SignAPIRequest(r, k.cert, k.signer, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// Profile writes a login profile directory for user against the bastion
// at base, as postern login would, and returns it.
func (u *Users) Profile(t testing.TB, user, base string) string {
	t.Helper()
	k := u.key(t, user)
	dir := t.TempDir()
	blk, err := ssh.MarshalPrivateKey(k.priv, user)
	if err != nil {
		t.Fatal(err)
	}
	pf := map[string]any{
		"bastion": base, "bastion_host": "127.0.0.1", "ssh_address": "127.0.0.1:2222", "username": user,
		"principals":  k.cert.ValidPrincipals,
		"valid_after": time.Unix(int64(k.cert.ValidAfter), 0).UTC(), "valid_before": time.Unix(int64(k.cert.ValidBefore), 0).UTC(),
	}
	pj, err := json.Marshal(pf)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		login.KeyFileName:     pem.EncodeToMemory(blk),
		login.CertFileName:    ssh.MarshalAuthorizedKey(k.cert),
		login.ProfileFileName: pj,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Index indexes a sealed recording for search, as the server's indexer
// does after each seal.
func (e *Env) Index(t testing.TB, id string) {
	t.Helper()
	ix, err := search.New(search.Options{State: e.State, Store: e.Store})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Index(context.Background(), id); err != nil {
		t.Fatalf("index %s: %v", id, err)
	}
}
