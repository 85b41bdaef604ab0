package s3test

import "testing"

// BenchmarkStart measures starting versitygw until it answers, and
// stopping it.
func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		Start(b).Stop()
	}
}
