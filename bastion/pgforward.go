package bastion

import (
	"context"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// postgres serves a forward to a tcp target with protocol: postgres: it
// dials the target, accepts the channel and hands both to the pgproxy,
// which audits, gates and masks every statement.
func (c *serverConn) postgres(ci *ConnInfo, nch ssh.NewChannel, p directTCPIP, t *policy.Target, port int, d policy.Decision, details map[string]any) {
	var d0 net.Dialer
	dctx, cancel := context.WithTimeout(c.ctx, dialTimeout)
	nc, err := d0.DialContext(dctx, "tcp", t.Dial(port))
	cancel()
	if err != nil {
		ci.Log.Info("postgres dial failed", "dest", details["dest"], "err", err)
		c.reject(ci, nch, ssh.ConnectionFailed, "postern: "+policy.Printable(p.Host)+": connect failed", codeDialFailed, details)
		return
	}
	defer nc.Close()
	ch, reqs, err := nch.Accept()
	if err != nil {
		ci.Log.Debug("accept channel", "err", err)
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	details["conn"], details["channel"], details["protocol"] = ci.ID, nch.ChannelType(), "postgres"
	details["addr"] = nc.RemoteAddr().String()
	ev := state.Event{Actor: ci.Identity.Username, Source: ci.Remote.Addr().String(), Target: t.Name}
	c.s.metrics.channels.WithLabelValues(nch.ChannelType(), "open").Inc()
	ev.Type, ev.Details = state.EventChannelOpen, details
	c.s.audit(c.ctx, ci.Log, ev)
	ev.Type = state.EventForwardStart
	c.s.audit(c.ctx, ci.Log, ev)

	var rules []pgproxy.Rule
	for _, r := range d.Rules {
		if r.Match == "" {
			continue // glob rules describe command lines, not SQL
		}
		pr, err := pgproxy.ParseRule(r.Match, r.Action)
		if err != nil {
			continue // config validation refuses unknown classes
		}
		pr.Approvers, pr.Approvals, pr.Timeout = r.Approvers, r.Approvals, r.Timeout.D()
		rules = append(rules, pr)
	}
	masks := c.s.opts.Masking.For(d.Role)
	start := time.Now()
	ctx, cancelS := c.sessionContext(d)
	defer cancelS()
	stop := context.AfterFunc(ctx, func() { ch.Close(); nc.Close() })
	defer stop()
	err = c.s.opts.Postgres.Serve(ctx, ch, nc, pgproxy.Session{
		Identity: ci.Identity.Username, Issuer: ci.Identity.Issuer, Groups: ci.Identity.Groups, Role: d.Role, Target: t.Name, Record: d.Record,
		Rules: rules, Recording: masks.Recording, Stream: masks.Stream,
		DatabaseUser: t.DatabaseUser, DatabasePassword: t.DatabasePassword,
	})
	end := map[string]any{"conn": ci.ID, "dest": details["dest"], "addr": details["addr"], "duration_ms": time.Since(start).Milliseconds()}
	if err != nil {
		end["error"] = "postgres session failed"
		ci.Log.Info("postgres session", "err", err)
	}
	ev.Type, ev.Details = state.EventForwardEnd, end
	c.s.audit(c.ctx, ci.Log, ev)
}
