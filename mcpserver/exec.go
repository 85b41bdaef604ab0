package mcpserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
)

// Limits of the SSH path.
const (
	dialTimeout = 15 * time.Second
	// maxOutput bounds what is kept of a command's stdout and of its
	// stderr; the rest is dropped and the result says truncated.
	maxOutput = 1 << 20
	// sessionIDRequest is the channel request the inner hop announces a
	// session's id with (innerhop.SessionIDRequest).
	sessionIDRequest = "session-id@postern"
	// jsonErrorsEnv asks the bastion for its notices as JSON lines.
	jsonErrorsEnv = "POSTERN_JSON_ERRORS"
	// maskedMarker starts what stream masking writes in place of a secret.
	maskedMarker = "[MASKED:"
)

// outer is the caller's connection to the bastion, reused by every command
// while the certificate it authenticated with is the current one.
type outer struct {
	caller Caller

	mu     sync.Mutex
	client *ssh.Client
	certID [32]byte      // which certificate client authenticated with
	dead   chan struct{} // closed when client's connection ends
}

// certKey identifies a certificate (a renewal makes a new one).
func certKey(cert *ssh.Certificate) [32]byte { return sha256.Sum256(cert.Marshal()) }

// get returns the connection and the signer it used, dialling afresh when
// there is none, it died, or the caller's certificate changed.
func (o *outer) get(ctx context.Context) (*ssh.Client, ssh.Signer, error) {
	cert, key, err := o.caller.Credentials(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("read credentials: %w", err)
	}
	signer, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pair key and certificate: %w", err)
	}
	id := certKey(cert)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.client != nil {
		select {
		case <-o.dead:
			o.client = nil
		default:
			if o.certID == id {
				return o.client, signer, nil
			}
			// A renewed certificate: new commands use it; commands on
			// the old connection go on until they end.
			old := o.client
			go func() { time.Sleep(time.Minute); old.Close() }() // not waited for: a grace for commands in flight
			o.client = nil
		}
	}
	ep := o.caller.Endpoints()
	user := ""
	if len(cert.ValidPrincipals) > 0 {
		user = cert.ValidPrincipals[0]
	}
	if ident, err := certs.IdentityFromCert(cert); err == nil {
		user = ident.Username
	}
	var banner string
	cfg := &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostChecker(ep.HostCAs), Timeout: dialTimeout,
		BannerCallback: func(m string) error { banner = m; return nil },
	}
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", ep.SSHAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("dial the bastion %s: %w", ep.SSHAddress, err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, ep.SSHAddress, cfg)
	if err != nil {
		nc.Close()
		if b := strings.TrimSpace(banner); b != "" {
			return nil, nil, &refusal{msg: b, code: codeFromNotice(b)}
		}
		return nil, nil, fmt.Errorf("log in to the bastion: %w", err)
	}
	o.client, o.certID, o.dead = ssh.NewClient(cc, chans, reqs), id, make(chan struct{})
	c, dead := o.client, o.dead
	go func() { _ = c.Wait(); close(dead) }() // ends with the connection
	return c, signer, nil
}

// close closes the connection.
func (o *outer) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.client != nil {
		o.client.Close()
		o.client = nil
	}
}

// refusal is postern refusing before the command could start: policy (a
// target or login not allowed), a lock, an unreachable target. msg is what
// postern said.
type refusal struct {
	msg, code string
}

func (r *refusal) Error() string { return r.msg }

// codeFromNotice guesses the code of a plain-text notice.
func codeFromNotice(msg string) string {
	switch {
	case strings.Contains(msg, " is locked") || strings.Contains(msg, "access is locked") || strings.Contains(msg, "session terminated"):
		return "locked"
	case strings.Contains(msg, "not allowed"):
		return "not_allowed"
	}
	return "refused"
}

// notice is a line postern writes on a session's stderr with
// POSTERN_JSON_ERRORS=1: an error that ends the session, or a held
// command's pending approval.
type notice struct {
	Error     string   `json:"error"`
	Code      string   `json:"code"`
	Exit      int      `json:"exit"`
	Status    string   `json:"status"`
	Request   string   `json:"request"`
	URL       string   `json:"url"`
	Approvers []string `json:"approvers"`
	Expires   string   `json:"expires"`
	Moderator string   `json:"moderator"`
}

// parseNotice reads line as postern's notice, if it is one.
func parseNotice(line []byte) (notice, bool) {
	line = bytes.TrimSpace(line)
	if len(line) < 2 || line[0] != '{' {
		return notice{}, false
	}
	var n notice
	if json.Unmarshal(line, &n) != nil || n.Code == "" || (n.Error == "" && n.Status == "") {
		return notice{}, false
	}
	return n, true
}

// execute runs command on target as login for r: the outer connection,
// a direct-tcpip channel to the target (the inner hop), a session channel,
// POSTERN_JSON_ERRORS=1, the exec. It returns once the session is over; r
// hears about the session id and a pending approval as they happen.
func (o *outer) execute(ctx context.Context, r *run, target, login, command string, stdin []byte) error {
	client, signer, err := o.get(ctx)
	if err != nil {
		return err
	}
	ep := o.caller.Endpoints()
	hostport := net.JoinHostPort(target, "22")
	nc, err := client.Dial("tcp", hostport)
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return &refusal{msg: oce.Message, code: codeFromNotice(oce.Message)}
		}
		return fmt.Errorf("open a channel to %s: %w", target, err)
	}
	defer nc.Close()
	var banner string
	cc, chans, reqs, err := ssh.NewClientConn(nc, hostport, &ssh.ClientConfig{
		User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostChecker(ep.HostCAs), Timeout: dialTimeout,
		BannerCallback: func(m string) error { banner = m; return nil },
	})
	if err != nil {
		if b := strings.TrimSpace(banner); b != "" {
			return &refusal{msg: b, code: codeFromNotice(b)}
		}
		return fmt.Errorf("log in to %s: %w", target, err)
	}
	inner := ssh.NewClient(cc, chans, reqs)
	defer inner.Close()
	stop := context.AfterFunc(ctx, func() { inner.Close() })
	defer stop()
	ch, creqs, err := inner.OpenChannel("session", nil)
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return &refusal{msg: oce.Message, code: codeFromNotice(oce.Message)}
		}
		return fmt.Errorf("open a session on %s: %w", target, err)
	}
	defer ch.Close()

	var wg sync.WaitGroup
	wg.Go(func() {
		for req := range creqs {
			switch req.Type {
			case "exit-status":
				var st struct{ Status uint32 }
				if ssh.Unmarshal(req.Payload, &st) == nil {
					r.setExit(int(st.Status))
				}
			case "exit-signal":
				var sig struct {
					Signal     string
					CoreDumped bool
					Error      string
					Lang       string
				}
				if ssh.Unmarshal(req.Payload, &sig) == nil {
					r.setSignal(sig.Signal)
				}
			case sessionIDRequest:
				var p struct{ ID string }
				if ssh.Unmarshal(req.Payload, &p) == nil {
					r.setSession(p.ID)
				}
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	})
	wg.Go(func() { _, _ = io.Copy(r.stdout, ch) })
	wg.Go(func() { r.readStderr(ch.Stderr()) })

	_, _ = ch.SendRequest("env", false, ssh.Marshal(struct{ Name, Value string }{jsonErrorsEnv, "1"}))
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{command}))
	if err == nil && !ok {
		err = errors.New("the bastion refused to run the command")
	}
	if err == nil {
		if len(stdin) > 0 {
			_, err = ch.Write(stdin)
		}
		_ = ch.CloseWrite()
	}
	if err != nil {
		ch.Close()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// info runs `targets --json` on the bastion's own session channel.
func (o *outer) info(ctx context.Context) ([]byte, error) {
	client, _, err := o.get(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := client.NewSession()
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return nil, &refusal{msg: oce.Message, code: codeFromNotice(oce.Message)}
		}
		return nil, fmt.Errorf("open a session on the bastion: %w", err)
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	out, err := sess.Output("targets --json")
	if err != nil {
		return nil, fmt.Errorf("ask the bastion what you may reach: %w", err)
	}
	return out, nil
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxOutput - b.buf.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

// String returns what was kept, and whether some was dropped.
func (b *limitedBuffer) String() (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.truncated
}
