package s3store_test

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/posternhq/postern/recorder"
)

// BenchmarkStoreThroughput measures sustained recorded throughput: one
// session writes 16 MiB of terminal text through Session.Output and is
// finished (stored and sealed), with the file store and with the S3 store
// streaming to versitygw on loopback.
func BenchmarkStoreThroughput(b *testing.B) {
	const size = 16 << 20
	rng := rand.New(rand.NewPCG(9, 10))
	chunks := make([][]byte, 0, size/(32<<10))
	for range size / (32 << 10) {
		chunks = append(chunks, textChunk(rng, 32<<10))
	}
	run := func(b *testing.B, rec *recorder.Recorder) {
		ctx := context.Background()
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			s, err := rec.Start(ctx, recorder.Meta{Identity: "bench", Target: "t", Kind: "shell"})
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range chunks {
				if err := s.Output(c); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Finish(ctx, recorder.Result{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("file", func(b *testing.B) {
		dir := b.TempDir()
		fs, err := recorder.NewFileStore(filepath.Join(dir, "recordings"))
		if err != nil {
			b.Fatal(err)
		}
		rec, err := recorder.New(recorder.Options{Store: fs, SpoolDir: filepath.Join(dir, "spool"), BufferSize: 4 << 20})
		if err != nil {
			b.Fatal(err)
		}
		run(b, rec)
	})
	b.Run("s3", func(b *testing.B) {
		srv := startS3(b)
		e := newEnv(b, storeURL(srv, bucket, "rec"), "", testOpts)
		rec, err := recorder.New(recorder.Options{Store: e.store, SpoolDir: e.spool, BufferSize: 4 << 20})
		if err != nil {
			b.Fatal(err)
		}
		run(b, rec)
	})
}
