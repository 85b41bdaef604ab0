package approval

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// openStore opens a real SQLite state store in dir.
func openStore(t testing.TB, dir string) *state.Store {
	t.Helper()
	st, err := state.Open(context.Background(), "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatalf("open state store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// auditLog collects audit events.
type auditLog struct {
	mu     sync.Mutex
	events []state.Event
}

func (l *auditLog) add(_ context.Context, e state.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *auditLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		out = append(out, e.Type)
	}
	return out
}

// directory is the group directory of the tests, by identity key: carol
// and dave of the corp issuer are SREs.
func directory(key string) []string {
	switch key {
	case "corp:carol", "corp:dave":
		return []string{"sre"}
	}
	return nil
}

// person is name as the corp issuer vouches for it (subject = name), in
// groups.
func person(name string, groups ...string) certs.Identity {
	return certs.Identity{Issuer: "corp", Subject: name, Username: name, Groups: groups}
}

func newTestBroker(t testing.TB, st Store, audit *auditLog) *Broker {
	t.Helper()
	opts := Options{Store: st, PublicURL: "https://bastion.example.com", Groups: directory,
		PollInterval: 20 * time.Millisecond}
	if audit != nil {
		opts.Audit = audit.add
	}
	b, err := NewBroker(opts)
	if err != nil {
		t.Fatalf("NewBroker: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// receiver is a local HTTP server standing in for a webhook receiver.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	hdrs   []http.Header
	got    chan struct{}
	status func(n int) int // status for the n-th request (1-based); 200 if nil
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{got: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		r.hdrs = append(r.hdrs, req.Header.Clone())
		n := len(r.bodies)
		r.mu.Unlock()
		st := http.StatusOK
		if r.status != nil {
			st = r.status(n)
		}
		w.WriteHeader(st)
		r.got <- struct{}{}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// next waits for the next request and returns its body decoded.
func (r *receiver) next(t testing.TB) map[string]any {
	t.Helper()
	select {
	case <-r.got:
	case <-time.After(10 * time.Second):
		t.Fatalf("no request reached %s", r.srv.URL)
	}
	r.mu.Lock()
	b := r.bodies[len(r.bodies)-1]
	r.mu.Unlock()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return m
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

var sudoRule = config.Rule{Match: `^\s*sudo\b`, Action: ActionApprove, Approvers: []string{"sre"},
	Timeout: config.Duration(time.Minute)}

func alice() certs.Identity {
	return person("alice", "dev")
}
