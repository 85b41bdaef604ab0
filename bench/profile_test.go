//go:build bench

package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/server"
	"github.com/posternhq/postern/state"
)

// TestProfile runs postern in this process (the same configuration as
// TestCompare) and writes CPU profiles of its hot paths to
// $POSTERN_BENCH_PROFILE (default: a temporary directory, logged):
// sessions.cpu (recorded sessions to the command target), recorded.cpu and
// unrecorded.cpu (bulk text output through the inner hop), forward.cpu
// (the splice path), and idle.heap (a heap profile with
// $POSTERN_BENCH_PROFILE_IDLE recorded sessions open, default 300; POSTERN_BENCH_PROFILE_HEAP_ONLY stops after
// it). The load generator runs in the same process; its
// frames are the x/crypto client's. Read them with `go tool pprof`.
func TestProfile(t *testing.T) {
	out := os.Getenv("POSTERN_BENCH_PROFILE")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, 64<<20, false)
	p := e.startService("prof")

	profile := func(name string, f func()) {
		fh, err := os.Create(filepath.Join(out, name+".cpu"))
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if err := pprof.StartCPUProfile(fh); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		f()
		pprof.StopCPUProfile()
		t.Logf("%s: %v, profile %s", name, time.Since(t0).Round(time.Millisecond), fh.Name())
	}

	// Idle recorded sessions: a heap profile (inuse_space) with them open.
	if n := envInt("POSTERN_BENCH_PROFILE_IDLE", 300); n > 0 {
		var hops []*hop
		for range n {
			h, err := e.viaPostern(p, ssh.CipherAES128GCM, "idle-rec")
			if err != nil {
				t.Fatal(err)
			}
			s, err := h.inner.NewSession()
			if err == nil {
				err = s.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
			}
			if err == nil {
				err = s.Shell()
			}
			if err != nil {
				t.Fatal(err)
			}
			hops = append(hops, h)
		}
		p.awaitEvents(t, state.EventSessionStart, n, time.Minute)
		runtime.GC()
		fh, err := os.Create(filepath.Join(out, "idle.heap"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(fh, 0); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		t.Logf("idle: %d sessions, heap profile %s", n, fh.Name())
		for _, h := range hops {
			h.Close()
		}
	}

	if os.Getenv("POSTERN_BENCH_PROFILE_HEAP_ONLY") != "" {
		return
	}
	profile("sessions", func() {
		var wg sync.WaitGroup
		stop := time.Now().Add(5 * time.Second)
		for range 8 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					h, err := e.viaPostern(p, ssh.CipherAES128GCM, "cmd-true")
					if err != nil {
						t.Error(err)
						return
					}
					s, err := h.inner.NewSession()
					if err == nil {
						err = s.Run("true")
					}
					h.Close()
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
	for _, kind := range []string{"rec", "plain"} {
		h, err := e.viaPostern(p, ssh.CipherAES128GCM, "web-"+kind+"-aes")
		if err != nil {
			t.Fatal(err)
		}
		name := map[string]string{"rec": "recorded", "plain": "unrecorded"}[kind]
		profile(name, func() {
			for range 5 {
				if _, err := catFile(h.inner, e.payloads["text"], 64<<20); err != nil {
					t.Fatal(err)
				}
			}
			if kind == "rec" {
				p.awaitEvents(t, state.EventSessionSealed, 5, time.Minute)
			}
		})
		h.Close()
	}
	jc, err := e.dialPostern(p, ssh.CipherAES128GCM)
	if err != nil {
		t.Fatal(err)
	}
	defer jc.Close()
	_, port, _ := net.SplitHostPort(e.sources["text"])
	profile("forward", func() {
		for range 3 {
			nc, err := jc.Dial("tcp", net.JoinHostPort("src-text", port))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, nc); err != nil {
				t.Fatal(err)
			}
			nc.Close()
		}
	})
}

// startService runs postern in this process (server.Service with the
// same configuration as the binary) and waits until it serves.
func (e *env) startService(name string) *postern {
	e.t.Helper()
	p := &postern{dataDir: filepath.Join(e.dir, "postern-"+name)}
	cfg, err := config.Parse([]byte(e.config(p.dataDir)))
	if err != nil {
		e.t.Fatalf("config: %v", err)
	}
	ready := make(chan string, 1)
	svc, err := server.NewService(cfg, server.ServiceOptions{Log: slog.New(slog.DiscardHandler),
		Ready: func(sshAddr, _ net.Addr) { ready <- sshAddr.String() }})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, nil) }()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case p.addr = <-ready:
	case err := <-done:
		e.t.Fatalf("service: %v", err)
	case <-time.After(time.Minute):
		e.t.Fatal("service not ready within a minute")
	}
	return p
}
