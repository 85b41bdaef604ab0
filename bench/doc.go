// Package bench measures postern against OpenSSH's sshd used as a jump host,
// side by side on one machine in one run, and reports the ratios the
// project is held to (postern ÷ OpenSSH) together with postern's own
// figures.
//
// The comparison itself lives in test files built only with the "bench"
// tag, so it never runs in the default test target:
//
//	make bench    # go test -tags bench -run TestCompare -v ./bench
//
// It starts, on 127.0.0.1, a stock sshd as the target (one per cipher, so
// postern's upstream hop uses the cipher under test), a stock sshd as the
// OpenSSH jump host, a TCP source streaming bulk bytes, an in-process
// x/crypto target for the idle-memory row, and the postern binary with
// recorded, unrecorded, passthrough, tcp and command targets. Each row is
// warmed up, then measured several times with OpenSSH and postern runs
// alternating; the report gives the median and the spread (min–max).
//
// This file set's non-test part is the report: [Report], [Row] and the
// Markdown and JSON forms written to bench/results/latest.md and .json.
package bench
