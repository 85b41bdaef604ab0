package pgtest

import (
	"fmt"
	"testing"
)

// BenchmarkStart measures starting a server from the template cluster
// until it accepts connections, and stopping it.
func BenchmarkStart(b *testing.B) {
	Start(b).Stop() // build the template outside the measurement
	for b.Loop() {
		Start(b).Stop()
	}
}

// BenchmarkCreateDB measures creating and dropping a database on the
// shared server, what NewDB costs a test.
func BenchmarkCreateDB(b *testing.B) {
	s := Shared(b)
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("bench_%d", i)
		s.Exec(b, "CREATE DATABASE "+name)
		s.Exec(b, "DROP DATABASE "+name)
	}
}
