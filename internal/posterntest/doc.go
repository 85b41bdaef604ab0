// Package posterntest runs a whole postern for tests: a server.Service in
// the test's process on 127.0.0.1 ([Start]). (Tests that run the postern
// binary get it from testutil.PosternBinary, built once per test run.)
// Around the service it gives what end-to-end tests need: users with
// certificates from the service's own user CA and an ssh_config that
// reaches every target through the bastion (ProxyJump), test sshd targets
// that trust the service's target CA, the audit events and recordings the
// service wrote, and a stand-in for Slack that captures approval messages
// and sends signed button clicks.
//
// It is a test harness: only tests import it.
package posterntest
