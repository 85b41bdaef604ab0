package state

import (
	"context"
	"testing"
)

func BenchmarkAppend(b *testing.B) {
	s, _ := openTest(b, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Append(ctx, Event{Type: EventChannelOpen, Actor: "alice", Target: "web-1", Details: map[string]any{"login": "deploy", "port": 22}}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIsRevoked(b *testing.B) {
	s, _ := openTest(b, Options{})
	ctx := context.Background()
	for i := range 100 {
		if err := s.Revoke(ctx, uint64(i), "", ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.IsRevoked(ctx, 4242); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendParallel appends from 16 goroutines per CPU: concurrent
// appends share commits (see Write), reported as events per commit.
func BenchmarkAppendParallel(b *testing.B) {
	s, _ := openTest(b, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(ctx, Event{Type: EventChannelOpen, Actor: "alice", Target: "web-1", Details: map[string]any{"login": "deploy", "port": 22}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	writes, groups := s.WriteStats()
	if groups > 0 {
		b.ReportMetric(float64(writes)/float64(groups), "events/commit")
	}
}
