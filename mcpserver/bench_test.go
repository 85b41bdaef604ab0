//go:build bench

package mcpserver_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/posternhq/postern/mcpserver"
)

// TestBenchMCPRun measures the round trip of one short command (`true` on
// an sshd target, recorded) BENCH_MCP_ROUNDS times (default 50) each way,
// interleaved: the stock OpenSSH client (`ssh -J bastion web-1 true`, a
// fresh client process as an agent's shell tool runs it), the same with the
// connection to the bastion multiplexed (ControlMaster on the jump leg: the
// work the MCP server does per command, an inner handshake, without its
// protocol), the MCP run tool over stdio (`postern mcp`) and over the
// bastion's /v1/mcp. It prints
// the percentiles and the MCP paths' overhead over ssh -J at p50; it
// asserts nothing about them (`make bench-mcp`).
func TestBenchMCPRun(t *testing.T) {
	rounds := 50
	if s := os.Getenv("BENCH_MCP_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	e := newMCPEnv(t)
	stdio := connectStdio(t, e, e.bot)
	web := connectHTTP(t, e, e.bot)
	args := map[string]any{"target": "web-1", "command": "true"}
	call := func(cs *sdk.ClientSession) time.Duration {
		start := time.Now()
		r := runTool(t, cs, args)
		d := time.Since(start)
		if r.Status != mcpserver.StatusCompleted {
			t.Fatalf("run: %+v", r)
		}
		return d
	}
	ctl := filepath.Join(t.TempDir(), "ctl")
	jump := "ssh -F " + e.bot.SSHConfig + " -o ControlMaster=auto -o ControlPath=" + ctl + " -o ControlPersist=120 -W [%h]:%p bastion"
	muxed := []string{"-o", "ProxyCommand=" + jump, "web-1", "true"}
	t.Cleanup(func() { e.bot.SSH(nil, nil, "-o", "ControlPath="+ctl, "-O", "exit", "bastion") })
	// Warm up every path once (first logins, upstream pool, caches).
	call(stdio)
	call(web)
	e.bot.SSH(nil, nil, "web-1", "true")
	e.bot.SSH(nil, nil, muxed...)
	var sshT, muxT, stdioT, webT []time.Duration
	for range rounds {
		start := time.Now()
		if r := e.bot.SSH(nil, nil, "web-1", "true"); r.Code != 0 {
			t.Fatalf("ssh: %d %s", r.Code, r.Stderr)
		}
		sshT = append(sshT, time.Since(start))
		start = time.Now()
		if r := e.bot.SSH(nil, nil, muxed...); r.Code != 0 {
			t.Fatalf("ssh (multiplexed jump): %d %s", r.Code, r.Stderr)
		}
		muxT = append(muxT, time.Since(start))
		stdioT = append(stdioT, call(stdio))
		webT = append(webT, call(web))
	}
	p := func(ds []time.Duration, q float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))].Round(100 * time.Microsecond)
	}
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{{"ssh -J web-1 true", sshT}, {"ssh -J, jump multiplexed", muxT}, {"MCP run over stdio", stdioT}, {"MCP run over /v1/mcp", webT}} {
		t.Logf("%-26s p50 %8s  p90 %8s  p99 %8s", row.name, p(row.ds, .5), p(row.ds, .9), p(row.ds, .99))
	}
	t.Logf("overhead over ssh -J at p50: stdio %s, /v1/mcp %s (%d rounds)", p(stdioT, .5)-p(sshT, .5), p(webT, .5)-p(sshT, .5), rounds)
}
