package bastion

import (
	"context"
	"net"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// Keys of Options.Handlers: which handler serves a channel the policy
// admitted to an inventory target.
const (
	// HandlerSSH serves ssh targets that are not passthrough (the inner hop).
	HandlerSSH = "ssh"
	// HandlerCommand serves command targets.
	HandlerCommand = "command"
	// HandlerTCP serves tcp targets, and ssh targets marked passthrough, as
	// bytes ([Splice]).
	HandlerTCP = "tcp"
	// HandlerPostgres serves tcp targets with protocol: postgres; HandlerTCP
	// serves them if no handler is registered under this key.
	HandlerPostgres = "postgres"
)

// A TargetHandler serves channels that the policy admitted to inventory
// targets of one kind. The server calls ServeTarget on the connection's
// goroutine for that channel; the handler owns the channel: it accepts or
// rejects it through tc, and returns when it is done with it.
type TargetHandler interface {
	// ServeTarget serves tc until the channel, the session or ctx ends. ctx
	// ends with the connection, or after the decision's max_session (its
	// cause then says why).
	ServeTarget(ctx context.Context, tc *TargetChannel)
}

// TargetHandlerFunc adapts a function to a TargetHandler.
type TargetHandlerFunc func(ctx context.Context, tc *TargetChannel)

// ServeTarget calls f(ctx, tc).
func (f TargetHandlerFunc) ServeTarget(ctx context.Context, tc *TargetChannel) { f(ctx, tc) }

// TargetChannel is a direct-tcpip channel the policy admitted to an
// inventory target, not yet accepted. Its methods account for the channel
// the way every other channel of the bastion is accounted for: Accept and
// Reject count it and audit channel.open or channel.deny.
type TargetChannel struct {
	// Conn is what authentication decided about the outer connection.
	Conn *ConnInfo
	// Target is the inventory target the channel is addressed to.
	Target *policy.Target
	// Decision is the policy decision that admitted it.
	Decision policy.Decision
	// Host is the destination host as the client typed it.
	Host string
	// Port is the destination port.
	Port int
	// Details are the audit details gathered so far (dest, origin, target,
	// role); handlers may add to them before Accept.
	Details map[string]any

	c   *serverConn
	nch ssh.NewChannel
}

// ChannelType is the SSH channel type (direct-tcpip).
func (tc *TargetChannel) ChannelType() string { return tc.nch.ChannelType() }

// Accept accepts the channel, discards its requests, counts it and audits
// channel.open with Details.
func (tc *TargetChannel) Accept() (ssh.Channel, error) {
	ch, reqs, err := tc.nch.Accept()
	if err != nil {
		tc.Conn.Log.Debug("accept channel", "err", err)
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	tc.c.s.metrics.channels.WithLabelValues(tc.nch.ChannelType(), "open").Inc()
	tc.Details["conn"], tc.Details["channel"] = tc.Conn.ID, tc.nch.ChannelType()
	tc.Audit(state.EventChannelOpen, tc.Details)
	return ch, nil
}

// Reject refuses the channel with a message the user sees, audits
// channel.deny with code and Details, and counts it.
func (tc *TargetChannel) Reject(why ssh.RejectionReason, msg, code string) {
	tc.c.reject(tc.Conn, tc.nch, why, msg, code, tc.Details)
}

// Dial connects to the target's address for the channel's port within the
// bastion's dial timeout. On failure it rejects the channel ("connect
// failed", code dial_failed) and returns the error.
func (tc *TargetChannel) Dial(ctx context.Context) (net.Conn, error) {
	return tc.c.dial(ctx, tc.Conn, tc.nch, tc.Host, []string{tc.Target.Dial(tc.Port)}, tc.Details)
}

// TrackSession puts the session with id that the handler serves on this
// channel under the locks: a lock that matches it (its identity, target or
// the session itself) calls end with the lock's cause. Call it before Accept:
// if a lock already matches, the channel is rejected with the lock's message
// and the error is returned. untrack must be called when the session ends.
// Without locks configured it does nothing.
func (tc *TargetChannel) TrackSession(id string, end func(cause error)) (untrack func(), err error) {
	if tc.c.s.opts.Locks == nil {
		return func() {}, nil
	}
	untrack, err = tc.c.s.opts.Locks.Track(lock.Subject{Identity: tc.Conn.Identity, Target: tc.Target.Name,
		Session: id, Conn: tc.Conn.ID}, end)
	if err != nil {
		msg := "postern: " + tc.Target.Name + ": locked"
		if ue := usererr.As(err); ue != nil {
			msg = "postern: " + ue.Msg
		}
		tc.Reject(ssh.Prohibited, msg, codeLocked)
		return nil, err
	}
	return untrack, nil
}

// Audit appends an audit event about the channel (actor, source and target
// filled in).
func (tc *TargetChannel) Audit(typ string, details map[string]any) {
	tc.c.s.audit(tc.c.ctx, tc.Conn.Log, state.Event{
		Type: typ, Actor: tc.Conn.Identity.Username, Source: tc.Conn.Remote.Addr().String(),
		Target: tc.Target.Name, Details: details,
	})
}

// handlerKey says which Options.Handlers entry serves t.
func handlerKey(t *policy.Target) string {
	switch {
	case t.Kind == config.KindTCP && t.Protocol == "postgres":
		return HandlerPostgres
	case t.Kind == config.KindTCP, t.Kind == config.KindSSH && t.Passthrough:
		return HandlerTCP
	case t.Kind == config.KindSSH:
		return HandlerSSH
	default:
		return t.Kind
	}
}

// handler returns the handler for t: its own key's, or for postgres targets
// without one, the byte splice of HandlerTCP.
func (s *Server) handler(t *policy.Target) TargetHandler {
	key := handlerKey(t)
	if h := s.opts.Handlers[key]; h != nil {
		return h
	}
	if key == HandlerPostgres {
		return s.opts.Handlers[HandlerTCP]
	}
	return nil
}

// Splice is the TargetHandler of tcp targets and passthrough ssh targets:
// it dials the target, accepts the channel and copies bytes both ways
// (forward.go), auditing forward.start and forward.end with byte counts.
var Splice TargetHandler = TargetHandlerFunc(func(ctx context.Context, tc *TargetChannel) {
	nc, err := tc.Dial(ctx)
	if err != nil {
		return
	}
	tc.c.splice(ctx, tc.Conn, tc.nch, nc, tc.Details)
})
