package bastion

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// directTCPIP is the payload of a direct-tcpip channel open request
// ([RFC 4254] §7.2).
type directTCPIP struct {
	Host       string
	Port       uint32
	OriginIP   string
	OriginPort uint32
}

// Channel denial codes beside the policy and SSRF codes.
const (
	codeBadRequest     = "bad_request"
	codeNotSupported   = "not_supported"
	codeUnknownType    = "unknown_channel_type"
	codeUnavailable    = "inner_unavailable"
	codeDialFailed     = "dial_failed"
	codeAcceptFailed   = "accept_failed"
	channelDirectTCPIP = "direct-tcpip"
	channelSession     = "session"
)

// handleChannel routes one channel open request. Every channel type is gated
// here: direct-tcpip (ssh -J, -L) by the role policy and the SSRF guard,
// session by info.go; everything else is refused.
func (c *serverConn) handleChannel(ci *ConnInfo, nch ssh.NewChannel) {
	switch t := nch.ChannelType(); t {
	case channelDirectTCPIP:
		c.directTCPIP(ci, nch)
	case channelSession:
		c.session(ci, nch)
	case "direct-streamlocal@openssh.com":
		c.reject(ci, nch, ssh.Prohibited, "postern: unix socket forwarding is not supported", codeNotSupported, nil)
	case "x11", "auth-agent@openssh.com", "forwarded-tcpip", "forwarded-streamlocal@openssh.com":
		c.reject(ci, nch, ssh.Prohibited, "postern: "+t+" channels are not supported on the bastion", codeNotSupported, nil)
	default:
		c.reject(ci, nch, ssh.UnknownChannelType, "postern: unknown channel type", codeUnknownType, nil)
	}
}

// knownChannelTypes are the channel and global request types that get their
// own metric label; any other (client-chosen) type is counted as "other".
var knownChannelTypes = map[string]bool{
	channelDirectTCPIP: true, channelSession: true, "x11": true, "auth-agent@openssh.com": true,
	"direct-streamlocal@openssh.com": true, "forwarded-tcpip": true, "forwarded-streamlocal@openssh.com": true,
	"tcpip-forward": true, "streamlocal-forward@openssh.com": true,
}

// channelLabel bounds the cardinality of the type label.
func channelLabel(t string) string {
	if knownChannelTypes[t] {
		return t
	}
	return "other"
}

// reject refuses nch with a user-visible msg, audits the denial with code
// and details, and counts it.
func (c *serverConn) reject(ci *ConnInfo, nch ssh.NewChannel, why ssh.RejectionReason, msg, code string, details map[string]any) {
	if details == nil {
		details = map[string]any{}
	}
	details["conn"] = ci.ID
	details["channel"] = policy.Printable(nch.ChannelType())
	details["code"] = code
	target, _ := details["target"].(string)
	c.s.audit(c.ctx, ci.Log, state.Event{
		Type: state.EventChannelDeny, Actor: ci.Identity.Username, Source: ci.Remote.Addr().String(),
		Target: target, Details: details,
	})
	outcome := "denied"
	if why == ssh.ConnectionFailed {
		outcome = "failed"
	}
	c.s.metrics.channels.WithLabelValues(channelLabel(nch.ChannelType()), outcome).Inc()
	ci.Log.Info("channel refused", "channel", details["channel"], "code", code, "dest", details["dest"])
	_ = nch.Reject(why, msg)
}

// directTCPIP serves ssh -J and -L. An inventory target is authorized by the
// policy (for ssh and command targets only that some login of the matching
// roles reaches it: the inner hop checks the login); tcp targets need
// forwarding.local. Anything else goes through the SSRF guard and the roles'
// forwarding.allow lists.
func (c *serverConn) directTCPIP(ci *ConnInfo, nch ssh.NewChannel) {
	var p directTCPIP
	if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil || p.Port > 65535 || p.Host == "" {
		c.reject(ci, nch, ssh.ConnectionFailed, "postern: bad forward request", codeBadRequest, nil)
		return
	}
	port := int(p.Port)
	dest := net.JoinHostPort(p.Host, strconv.Itoa(port))
	details := map[string]any{"dest": policy.Printable(dest), "origin": net.JoinHostPort(p.OriginIP, strconv.FormatUint(uint64(p.OriginPort), 10))}
	eng := c.s.policy.Load()
	id := ci.Identity
	denied := policy.DenyMessage(p.Host, id)

	if t, ok := eng.Lookup(dest); ok {
		details["target"] = t.Name
		d := eng.Authorize(id, t, "", port)
		if !d.Allow {
			c.reject(ci, nch, ssh.Prohibited, denied, d.Code, details)
			return
		}
		details["role"] = d.Role
		if t.Kind == config.KindTCP && !d.Forwarding.Local {
			c.reject(ci, nch, ssh.Prohibited, denied, policy.CodeNoForwarding, details)
			return
		}
		h := c.s.handler(t)
		if h == nil {
			c.reject(ci, nch, ssh.ConnectionFailed, "postern: "+t.Name+": not available", codeUnavailable, details)
			return
		}
		ctx, cancel := c.sessionContext(d)
		defer cancel(nil)
		if c.s.opts.Locks != nil {
			untrack, err := c.s.opts.Locks.Track(lock.Subject{Identity: id, Target: t.Name, Conn: ci.ID}, cancel)
			if err != nil {
				msg := "postern: " + t.Name + ": locked"
				if ue := usererr.As(err); ue != nil {
					msg = "postern: " + ue.Msg
				}
				c.reject(ci, nch, ssh.Prohibited, msg, codeLocked, details)
				return
			}
			defer untrack()
		}
		h.ServeTarget(ctx, &TargetChannel{Conn: ci, Target: t, Decision: d, Host: p.Host, Port: port, Details: details, c: c, nch: nch})
		return
	}

	addrs, d, err := c.s.guardDest(c.ctx, eng, id, p.Host, port)
	if err != nil {
		code := "denied"
		var ge *guardError
		if errors.As(err, &ge) {
			code = ge.code
			if ge.addr.IsValid() {
				details["addr"] = ge.addr.String()
			}
		}
		ci.Log.Debug("forward refused", "dest", dest, "err", err)
		c.reject(ci, nch, ssh.Prohibited, denied, code, details)
		return
	}
	details["role"] = d.Role
	dials := make([]string, len(addrs))
	for i, a := range addrs {
		dials[i] = netip.AddrPortFrom(a, uint16(port)).String()
	}
	ctx, cancel := c.sessionContext(d)
	defer cancel(nil)
	nc, err := c.dial(ctx, ci, nch, p.Host, dials, details)
	if err != nil {
		return
	}
	c.splice(ctx, ci, nch, nc, details)
}

// sessionContext is the connection's context, ending also after the
// decision's MaxSession, or when its cancel is called with a cause (a lock
// that matches the channel's target).
func (c *serverConn) sessionContext(d policy.Decision) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(c.ctx)
	if d.MaxSession > 0 {
		tctx, tcancel := context.WithTimeoutCause(ctx, d.MaxSession, errExpired)
		// The parent first, so that the channel's context ends with cause.
		return tctx, func(cause error) { cancel(cause); tcancel() }
	}
	return ctx, cancel
}

// dial connects to the first reachable of addrs (already authorized and
// checked) within dialTimeout. On failure it rejects nch with "connect
// failed" (host as the client typed it) and returns the error.
func (c *serverConn) dial(ctx context.Context, ci *ConnInfo, nch ssh.NewChannel, host string, addrs []string, details map[string]any) (net.Conn, error) {
	var d0 net.Dialer
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	for _, a := range addrs {
		if nc, err = d0.DialContext(dctx, "tcp", a); err == nil {
			return nc, nil
		}
	}
	ci.Log.Info("forward dial failed", "dest", details["dest"], "err", err)
	c.reject(ci, nch, ssh.ConnectionFailed, "postern: "+policy.Printable(host)+": connect failed", codeDialFailed, details)
	return nil, err
}

// splice accepts nch and copies bytes between it and nc until either side
// ends or ctx does, auditing channel.open, forward.start and forward.end
// (with byte counts). It closes nc.
func (c *serverConn) splice(ctx context.Context, ci *ConnInfo, nch ssh.NewChannel, nc net.Conn, details map[string]any) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		nc.Close()
		ci.Log.Debug("accept channel", "err", err)
		return
	}
	go ssh.DiscardRequests(reqs)
	target, _ := details["target"].(string)
	if target == "" {
		target = details["dest"].(string)
	}
	details["conn"], details["channel"] = ci.ID, nch.ChannelType()
	details["addr"] = tc.RemoteAddr().String()
	ev := state.Event{Actor: ci.Identity.Username, Source: ci.Remote.Addr().String(), Target: target}
	c.s.metrics.channels.WithLabelValues(nch.ChannelType(), "open").Inc()
	ev.Type, ev.Details = state.EventChannelOpen, details
	c.s.audit(c.ctx, ci.Log, ev)
	ev.Type = state.EventForwardStart
	c.s.audit(c.ctx, ci.Log, ev)

	start := time.Now()
	st := splice(ctx, ch, tc, c.s.metrics.bytesUp, c.s.metrics.bytesDown)
	dur := time.Since(start)
	end := map[string]any{
		"conn": ci.ID, "dest": details["dest"], "addr": details["addr"],
		"bytes_up": st.Up, "bytes_down": st.Down, "duration_ms": dur.Milliseconds(),
	}
	if st.Err != nil {
		end["error"] = "copy failed"
		ci.Log.Debug("forward copy", "err", st.Err)
	}
	ev.Type, ev.Details = state.EventForwardEnd, end
	c.s.audit(c.ctx, ci.Log, ev)
	ci.Log.Debug("forward end", "dest", details["dest"], "up", st.Up, "down", st.Down, "duration", dur)
}
