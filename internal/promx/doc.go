// Package promx registers postern's Prometheus collectors: one place that
// decides what happens when two components (two replicas' worth of
// recorders in one test, a verifier rebuilt by a reload) register a
// collector of the same name on one registry.
//
// It imports nothing of postern.
package promx
