package sshdtest

import "testing"

// BenchmarkStart measures starting sshd until it listens, and killing it.
func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		Start(b, Options{}).Kill()
	}
}
