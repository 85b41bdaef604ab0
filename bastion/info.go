package bastion

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// Info is what `ssh bastion targets --json` prints: who the user is and
// what they may reach.
type Info struct {
	// User is the identity's username.
	User string `json:"user"`
	// Issuer is the configured issuer name.
	Issuer string `json:"issuer"`
	// Kind is human or agent.
	Kind string `json:"kind"`
	// Groups are the identity's groups.
	Groups []string `json:"groups"`
	// Login is the login of this connection.
	Login string `json:"login"`
	// Expires is when the certificate expires (RFC 3339); empty if never.
	Expires string `json:"expires,omitempty"`
	// Roles are the matching roles.
	Roles []string `json:"roles"`
	// Permissions are the API permissions of the roles.
	Permissions []string `json:"permissions"`
	// Targets are the reachable targets.
	Targets []TargetInfo `json:"targets"`
}

// TargetInfo is one reachable target and how to reach it.
type TargetInfo struct {
	policy.Access
	// How lists example commands.
	How []string `json:"how"`
}

// exitUsage is the exit status of an unknown command on the bastion.
const exitUsage = 2

// session serves a session channel on the bastion itself: there is no
// shell. `shell` (or exec "", "whoami", "info") prints who the user is and
// what they may reach; exec "targets --json" prints the same as JSON. pty-req,
// env and window-change are accepted and ignored; subsystems, agent and X11
// forwarding are refused with a message on stderr; other requests are
// answered false.
func (c *serverConn) session(ci *ConnInfo, nch ssh.NewChannel) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		ci.Log.Debug("accept session", "err", err)
		return
	}
	c.s.metrics.channels.WithLabelValues(channelSession, "open").Inc()
	c.s.audit(c.ctx, ci.Log, state.Event{
		Type: state.EventChannelOpen, Actor: ci.Identity.Username, Source: ci.Remote.Addr().String(),
		Target: "bastion", Details: map[string]any{"conn": ci.ID, "channel": channelSession},
	})
	defer ch.Close()
	pty := false
	for {
		var req *ssh.Request
		var ok bool
		select {
		case req, ok = <-reqs:
			if !ok {
				return
			}
		case <-c.ctx.Done():
			return
		}
		switch req.Type {
		case "pty-req":
			pty = true
			req.Reply(true, nil)
		case "env", "window-change":
			req.Reply(true, nil)
		case "shell", "exec":
			var cmd struct{ Command string }
			if req.Type == "exec" {
				if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
					req.Reply(false, nil)
					continue
				}
			}
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			var out io.Writer = ch
			if pty {
				out = crlfWriter{ch}
			}
			status := c.runInfo(ci, out, ch.Stderr(), cmd.Command)
			ch.CloseWrite()
			ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			return
		case "subsystem":
			fmt.Fprintf(ch.Stderr(), "postern: subsystems are not available on the bastion; use ssh -J to reach a target\r\n")
			req.Reply(false, nil)
		case "auth-agent-req@openssh.com":
			fmt.Fprintf(ch.Stderr(), "postern: agent forwarding is not available on the bastion\r\n")
			req.Reply(false, nil)
		case "x11-req":
			fmt.Fprintf(ch.Stderr(), "postern: X11 forwarding is not available on the bastion\r\n")
			req.Reply(false, nil)
		default:
			req.Reply(false, nil)
		}
	}
}

// runInfo runs one bastion command and returns its exit status.
func (c *serverConn) runInfo(ci *ConnInfo, stdout, stderr io.Writer, cmd string) uint32 {
	args := strings.Fields(cmd)
	switch {
	case len(args) == 0, len(args) == 1 && (args[0] == "whoami" || args[0] == "info"):
		c.writeInfoText(stdout, c.info(ci))
		return 0
	case args[0] == "targets" && len(args) == 1:
		c.writeInfoText(stdout, c.info(ci))
		return 0
	case args[0] == "targets" && len(args) == 2 && args[1] == "--json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(c.info(ci))
		return 0
	}
	fmt.Fprintf(stderr, "postern: the bastion runs no commands; try `whoami` or `targets --json`, or ssh -J to a target\n")
	return exitUsage
}

// bastionSpec is how the user reaches this bastion: login@host[:port].
func (c *serverConn) bastionSpec(ci *ConnInfo) string {
	host, port := "", 22
	if ap := addrPortOf(c.nc.LocalAddr()); ap.IsValid() {
		host, port = ap.Addr().String(), int(ap.Port())
	}
	if len(c.s.opts.HostNames) > 0 {
		host = c.s.opts.HostNames[0]
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	spec := ci.Login + "@" + host
	if port != 22 {
		spec += ":" + strconv.Itoa(port)
	}
	return spec
}

func (c *serverConn) info(ci *ConnInfo) Info {
	eng := c.s.policy.Load()
	id := ci.Identity
	inf := Info{
		User: id.Username, Issuer: id.Issuer, Kind: string(id.Kind), Groups: id.Groups, Login: ci.Login,
		Roles: eng.Roles(id), Permissions: eng.Permissions(id), Targets: []TargetInfo{},
	}
	if inf.Groups == nil {
		inf.Groups = []string{}
	}
	if inf.Roles == nil {
		inf.Roles = []string{}
	}
	if inf.Permissions == nil {
		inf.Permissions = []string{}
	}
	if !ci.Expiry().IsZero() {
		inf.Expires = ci.Expiry().UTC().Format(time.RFC3339)
	}
	b := c.bastionSpec(ci)
	for _, a := range eng.Visible(id) {
		ti := TargetInfo{Access: a, How: []string{}}
		switch a.Kind {
		case config.KindSSH, config.KindCommand:
			for _, l := range a.Logins {
				ti.How = append(ti.How, fmt.Sprintf("ssh -J %s %s@%s", b, l, a.Name))
			}
		case config.KindTCP:
			if a.Forward {
				for _, p := range a.Ports {
					ti.How = append(ti.How, fmt.Sprintf("ssh -N -L %d:%s:%d %s", p, a.Name, p, b))
				}
			}
		}
		inf.Targets = append(inf.Targets, ti)
	}
	return inf
}

func (c *serverConn) writeInfoText(w io.Writer, inf Info) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "postern bastion: you are %s (issuer %s, %s)\n", inf.User, inf.Issuer, inf.Kind)
	if len(inf.Groups) > 0 {
		fmt.Fprintf(&buf, "  groups:  %s\n", strings.Join(inf.Groups, ", "))
	}
	if inf.Expires != "" {
		fmt.Fprintf(&buf, "  expires: %s\n", inf.Expires)
	}
	if len(inf.Roles) == 0 {
		fmt.Fprintf(&buf, "  roles:   none; you may reach no target\n")
	} else {
		fmt.Fprintf(&buf, "  roles:   %s\n", strings.Join(inf.Roles, ", "))
	}
	if len(inf.Targets) > 0 {
		fmt.Fprintf(&buf, "\ntargets you may reach:\n")
		tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
		for _, t := range inf.Targets {
			what := "logins " + strings.Join(t.Logins, ",")
			if t.Kind == config.KindTCP {
				var ps []string
				for _, p := range t.Ports {
					ps = append(ps, strconv.Itoa(p))
				}
				what = "ports " + strings.Join(ps, ",")
				if !t.Forward {
					what += " (no forwarding)"
				}
			}
			rec := "record " + t.Record
			if t.Passthrough {
				rec = "passthrough, not recorded"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Kind, what, rec)
		}
		tw.Flush()
		fmt.Fprintf(&buf, "\nconnect with:\n")
		for _, t := range inf.Targets {
			for _, h := range t.How {
				fmt.Fprintf(&buf, "  %s\n", h)
			}
		}
		for _, t := range inf.Targets {
			if len(t.Rules) == 0 && !t.Moderated && t.Interactive {
				continue
			}
			fmt.Fprintf(&buf, "\non %s:\n", t.Name)
			if !t.Interactive && t.Kind != config.KindTCP {
				fmt.Fprintf(&buf, "  commands only (no interactive shell)\n")
			}
			if t.Moderated {
				fmt.Fprintf(&buf, "  sessions wait until a moderator watches them\n")
			}
			for _, r := range t.Rules {
				pat := r.Match
				if pat == "" {
					pat = r.Glob
				}
				switch r.Action {
				case "approve":
					fmt.Fprintf(&buf, "  %s: held for approval by %s\n", policy.Printable(pat), strings.Join(r.Approvers, ", "))
				case "deny":
					fmt.Fprintf(&buf, "  %s: denied\n", policy.Printable(pat))
				default:
					fmt.Fprintf(&buf, "  %s: allowed\n", policy.Printable(pat))
				}
			}
		}
	}
	_, _ = w.Write(buf.Bytes())
}

// crlfWriter turns \n into \r\n for a client with a pty.
type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}
