package pgproxy

import (
	"context"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/guardrails"
	"github.com/posternhq/postern/state"
)

// Handler is the bastion's handler of tcp targets with protocol: postgres
// ([bastion.HandlerPostgres]): it dials the target, accepts the channel and
// hands both to the proxy, which audits, gates and masks every statement.
type Handler struct {
	// Proxy serves the connections. Required.
	Proxy *Proxy
	// Masking gives each session's masks by role; nothing is masked if nil.
	Masking *guardrails.Policy
}

// ServeTarget implements bastion.TargetHandler.
func (h Handler) ServeTarget(ctx context.Context, tc *bastion.TargetChannel) {
	// The session's id is chosen here so that a lock of this session (a
	// Terminate) reaches it as it reaches an inner-hop session.
	sid := ulid.Make().String()
	ctx, stopSession := context.WithCancelCause(ctx)
	defer stopSession(nil)
	untrack, err := tc.TrackSession(sid, stopSession)
	if err != nil {
		return
	}
	defer untrack()
	nc, err := tc.Dial(ctx)
	if err != nil {
		return
	}
	defer nc.Close()
	tc.Details["protocol"] = "postgres"
	tc.Details["addr"] = nc.RemoteAddr().String()
	ch, err := tc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	tc.Audit(state.EventForwardStart, tc.Details)

	d := tc.Decision
	var rules []Rule
	for _, r := range d.Rules {
		if r.Match == "" {
			continue // glob rules describe command lines, not SQL
		}
		pr, err := ParseRule(r.Match, r.Action)
		if err != nil {
			continue // config validation refuses unknown classes
		}
		pr.Approvers, pr.Approvals, pr.Timeout = r.Approvers, r.Approvals, r.Timeout.D()
		rules = append(rules, pr)
	}
	masks := h.Masking.For(d.Role)
	start := time.Now()
	id := tc.Conn.Identity
	err = h.Proxy.Serve(ctx, ch, nc, Session{
		ID: sid, Identity: id.Username, Issuer: id.Issuer, Requester: id, Groups: id.Groups, Role: d.Role, Target: tc.Target.Name, Record: d.Record,
		Rules: rules, Recording: masks.Recording, Stream: masks.Stream,
		DatabaseUser: tc.Target.DatabaseUser, DatabasePassword: tc.Target.DatabasePassword,
	})
	end := map[string]any{"conn": tc.Conn.ID, "dest": tc.Details["dest"], "addr": tc.Details["addr"], "duration_ms": time.Since(start).Milliseconds()}
	if err != nil {
		end["error"] = "postgres session failed"
		tc.Conn.Log.Info("postgres session", "err", err)
	}
	tc.Audit(state.EventForwardEnd, end)
}
