// Package testutil holds the small pieces every postern test harness shares:
// free loopback ports, waiting until a port answers, starting a real child
// process whose output is captured and searched for readiness lines, serving
// a listener until the test ends, and finding or building the test server
// binaries of the tools/ modules.
//
// A [Proc] is owned by the test that started it: [Start] registers a
// t.Cleanup that kills the process, its process group and every descendant,
// and waits for it, so no test leaves a server behind. Output (stdout and
// stderr, interleaved) is kept in memory and logged through t.Log when the
// test fails. [Launch] is the same without a test, for package-level shared
// servers stopped from TestMain. Children also die with the test binary
// (parent-death signal), so a timed-out test run leaves no servers either.
//
// Nothing here sleeps for a fixed time: readiness is a port that accepts a
// connection ([WaitPort]) or a line the process prints ([Proc.WaitLine]).
//
// This package is for tests only and must not be imported by non-test code.
package testutil
