// Package sshdtest starts a real OpenSSH sshd (the Debian openssh-server
// binary) on 127.0.0.1 for end-to-end tests, and builds the stock ssh
// client flags every test uses.
//
// [Start] writes a private sshd_config, host key, trusted user CA file and
// authorized_keys file into a test temporary directory, runs
// "sshd -f <config> -D -e" and waits for its "Server listening on" line.
// The server belongs to the test: it is killed (with its whole process
// group) in t.Cleanup. [Server.Kill] stops it early for fault tests.
//
// sshd must run as root to log users in (CI runs as root); tests log in as
// root or as the current user. A caller-supplied host key is served to sshd
// through an in-process SSH agent (sshd's HostKeyAgent), so any
// [ssh.Signer] works, including ones whose private key is not exportable.
//
// This package is for tests only and must not be imported by non-test code.
package sshdtest
