package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// The benchmarks below measure what signing costs (`make bench-audit`):
// events appended per second while a checkpointer signs and anchors
// checkpoints at a given interval, against none; recorded sessions sealed
// per second with signed and unsigned seals; and one checkpoint and one
// seal signature on their own.

// benchEnv is an env for a benchmark (SQLite, a file store).
func benchEnv(b *testing.B) *env {
	b.Helper()
	e := &env{backend: "sqlite", dir: b.TempDir()}
	var err error
	if e.store, err = recorder.NewFileStore(filepath.Join(e.dir, "recordings")); err != nil {
		b.Fatal(err)
	}
	if e.st, err = state.Open(context.Background(), "sqlite://"+filepath.Join(e.dir, "state.db"), state.Options{AuditFile: filepath.Join(e.dir, "audit.jsonl")}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.st.Close() })
	e.key = auditKey(b, config.CA{})
	return e
}

// BenchmarkAppendCheckpointed appends events from 16 goroutines per CPU
// while a checkpointer takes a checkpoint every interval (none for "off"),
// signing it and anchoring it in the recording store.
func BenchmarkAppendCheckpointed(b *testing.B) {
	for _, interval := range []time.Duration{0, time.Second, 100 * time.Millisecond, 10 * time.Millisecond} {
		name := "off"
		if interval > 0 {
			name = "interval=" + interval.String()
		}
		b.Run(name, func(b *testing.B) {
			e := benchEnv(b)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var cp *audit.Checkpointer
			if interval > 0 {
				var err error
				cp, err = audit.NewCheckpointer(audit.CheckpointerOptions{State: e.st, Signer: e.key, Interval: interval,
					Anchors: []audit.Anchor{&audit.StorageAnchor{Objects: e.store}}})
				if err != nil {
					b.Fatal(err)
				}
				wg.Go(func() { cp.Run(ctx) })
			}
			b.SetParallelism(16)
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.st.Append(ctx, state.Event{Type: state.EventChannelOpen, Actor: "alice", Target: "web-1",
						Details: map[string]any{"login": "deploy", "port": 22}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
			cancel()
			wg.Wait()
			if cp != nil {
				n, _ := e.st.Checkpoints(context.Background(), 0, 1_000_000)
				b.ReportMetric(float64(len(n)), "checkpoints")
			}
		})
	}
}

// BenchmarkSealedSessions records and seals short sessions (start, one
// output, finish) with unsigned and signed seals.
func BenchmarkSealedSessions(b *testing.B) {
	for _, signed := range []bool{false, true} {
		b.Run(fmt.Sprintf("signed=%v", signed), func(b *testing.B) {
			e := benchEnv(b)
			opts := recorder.Options{Store: e.store, State: e.st, SpoolDir: filepath.Join(e.dir, "spool")}
			if signed {
				opts.Signer = e.key
			}
			rec, err := recorder.New(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer rec.Close()
			ctx := context.Background()
			b.SetParallelism(4)
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					s, err := rec.Start(ctx, recorder.Meta{Identity: "alice", Target: "web-1", Kind: state.KindExec, Command: "uptime"})
					if err != nil {
						b.Error(err)
						return
					}
					s.Output([]byte("up 3 days\r\n"))
					if _, err := s.Finish(ctx, recorder.Result{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/session")
		})
	}
}

// BenchmarkCheckpoint is one checkpoint: sign, store, anchor in a file
// store.
func BenchmarkCheckpoint(b *testing.B) {
	e := benchEnv(b)
	cp, err := audit.NewCheckpointer(audit.CheckpointerOptions{State: e.st, Signer: e.key,
		Anchors: []audit.Anchor{&audit.StorageAnchor{Objects: e.store}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		if _, err := e.st.Append(ctx, state.Event{Type: state.EventAuthSuccess}); err != nil {
			b.Fatal(err)
		}
		cpu0 := cpuTime()
		b.StartTimer()
		if _, took, err := cp.Checkpoint(ctx, true); err != nil || !took {
			b.Fatal(took, err)
		}
		b.StopTimer()
		cpu += cpuTime() - cpu0
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/checkpoint")
}

// BenchmarkSignSeal is the signature of one seal record.
func BenchmarkSignSeal(b *testing.B) {
	key := auditKey(b, config.CA{})
	rec := audit.SealRecordOf(state.Session{ID: "01J0000000000000000000000", Identity: "alice", Target: "web-1",
		Start: time.Now(), Status: state.StatusFinished, SHA256: "ab", Object: "2026/01/01/x.cast"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := audit.Sign(key, rec); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the CPU time (user and system) this process has used: a cost
// that other work on a shared machine disturbs far less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
