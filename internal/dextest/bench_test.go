package dextest

import "testing"

// BenchmarkStart measures starting Dex with one user until its discovery
// document is served, and killing it.
func BenchmarkStart(b *testing.B) {
	opts := Options{Users: []User{{Email: "a@example.com", Password: "alice-pw"}}}
	for b.Loop() {
		Start(b, opts).Kill()
	}
}

// BenchmarkPasswordToken measures one password grant.
func BenchmarkPasswordToken(b *testing.B) {
	d := Start(b, Options{Users: []User{{Email: "a@example.com", Password: "alice-pw"}}})
	for b.Loop() {
		d.PasswordToken(b, "a@example.com", "alice-pw")
	}
}
