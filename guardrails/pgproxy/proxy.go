package pgproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// EventQuery is the audit event type of one statement.
const EventQuery = "sql.query"

// Rule actions.
const (
	ActionAllow   = "allow"
	ActionDeny    = "deny"
	ActionApprove = "approve"
)

// Rule gates statements. Exactly one of Pattern and Class is set.
type Rule struct {
	// Pattern matches the normalized statement (comments removed, white
	// space collapsed).
	Pattern *regexp.Regexp
	// Class is a statement class (ClassDrop...).
	Class string
	// Action is allow, deny or approve.
	Action string
	// Approvers, Approvals and Timeout are passed to the approver.
	Approvers []string
	Approvals int
	Timeout   time.Duration
}

// ParseRule builds a Rule from a role rule's regular expression (or
// "sql:<class>") and action.
func ParseRule(match, action string) (Rule, error) {
	if c, ok := strings.CutPrefix(match, classPrefix); ok {
		switch c {
		case ClassDrop, ClassTruncate, ClassAlter, ClassDeleteNoWhere, ClassUpdateNoWhere:
			return Rule{Class: c, Action: action}, nil
		}
		return Rule{}, fmt.Errorf("unknown statement class %q", c)
	}
	re, err := regexp.Compile(match)
	if err != nil {
		return Rule{}, fmt.Errorf("rule pattern: %w", err)
	}
	return Rule{Pattern: re, Action: action}, nil
}

// StatementRequest asks for approval of one statement.
type StatementRequest struct {
	// Session is the connection's session (recording) id.
	Session string
	// Identity, Role and Target describe who runs it where.
	Identity, Role, Target string
	// Requester is the whole identity of who runs it (approvals key on it).
	Requester certs.Identity
	// Groups are the identity's groups.
	Groups []string
	// Database is the database of the connection.
	Database string
	// Statement is the SQL text.
	Statement string
	// Rule is the matching rule.
	Rule Rule
}

// StatementApprover holds a statement until it is approved (nil) or denied
// (an error whose text the client sees).
type StatementApprover interface {
	ApproveStatement(ctx context.Context, r StatementRequest) error
}

// Options configures a Proxy.
type Options struct {
	// Recorder records each connection as a "sql" session; nothing is
	// recorded if nil.
	Recorder *recorder.Recorder
	// Store receives the JSONL query log of each recorded connection; no
	// log is stored if nil.
	Store recorder.Store
	// Audit receives audit events; dropped if nil.
	Audit func(context.Context, state.Event)
	// Approver holds statements of approve rules; they are denied if nil.
	Approver StatementApprover
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
	// Metrics registers the proxy's metrics; not registered if nil.
	Metrics prometheus.Registerer
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Session describes one client connection.
type Session struct {
	// ID is the session id; a new one if empty.
	ID string
	// Identity, Issuer, Role and Target describe the user and target.
	Identity, Issuer, Role, Target string
	// Requester is the whole identity of the user: approvals and the
	// recording's owner (its identity key) key on it.
	Requester certs.Identity
	// Groups are the identity's groups (for approvals).
	Groups []string
	// Record is required, optional or off.
	Record string
	// Rules gate statements; first match wins; allow if none matches.
	Rules []Rule
	// Recording masks what is recorded and logged; Stream what the client
	// receives. Nil masks nothing.
	Recording, Stream *mask.Masker
	// DatabaseUser replaces the startup user when set.
	DatabaseUser string
	// DatabasePassword answers the server's password challenge when set.
	DatabasePassword string
}

// Proxy terminates the PostgreSQL protocol. It is safe for concurrent use.
type Proxy struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time
	m    *metrics
}

type metrics struct {
	statements *prometheus.CounterVec
	masked     prometheus.Counter
}

// New returns a Proxy.
func New(opts Options) (*Proxy, error) {
	p := &Proxy{opts: opts, log: opts.Log, now: opts.Now}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.m = &metrics{
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_sql_statements_total", Help: "SQL statements seen on postgres targets, by outcome (ok, error, denied).",
		}, []string{"outcome"}),
		masked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_sql_masked_values_total", Help: "Result values masked on their way to clients.",
		}),
	}
	r := &promx.Registrar{Reg: opts.Metrics}
	p.m.statements = promx.Add(r, p.m.statements)
	p.m.masked = promx.Add(r, p.m.masked)
	if r.Err != nil {
		return nil, fmt.Errorf("pgproxy: %w", r.Err)
	}
	return p, nil
}

// Message size bounds: a longer message ends the connection.
const (
	maxClientMessage = 64 << 20
	maxServerMessage = 256 << 20
)

// ErrRecordingUnavailable is returned when a required recording cannot start.
var ErrRecordingUnavailable = errors.New("recording unavailable")

// Serve relays one client connection to upstream until either ends or ctx
// ends. If ctx ends first, the client reads why when the cause is a
// user-visible error (a FATAL error with code 57P01 and "postern: " and the
// cause's message), and Serve closes both connections that are io.Closers;
// otherwise it closes neither and the caller does.
func (p *Proxy) Serve(ctx context.Context, client io.ReadWriter, upstream io.ReadWriter, s Session) error {
	c := &conn{
		p: p, s: s, ctx: ctx,
		client: client, upstream: upstream,
		be:       pgproto3.NewBackend(bufio.NewReader(client), client),
		fe:       pgproto3.NewFrontend(bufio.NewReader(upstream), upstream),
		stmts:    map[string]prepared{},
		portals:  map[string]prepared{},
		txStatus: 'I',
	}
	c.be.SetMaxBodyLen(maxClientMessage)
	c.fe.SetMaxBodyLen(maxServerMessage)
	c.log = p.log.With("target", s.Target, "identity", s.Identity)
	stop := context.AfterFunc(ctx, c.ended)
	defer stop()
	err := c.startup()
	if err != nil || c.cancel {
		return err
	}
	if err := c.startRecording(); err != nil {
		c.sendError("08006", "postern: recording unavailable")
		return err
	}
	defer c.finish()
	return c.relay()
}

// endNoticeWait bounds how long the end of a session waits for its notice to
// reach the client (a client that reads nothing holds the write).
const endNoticeWait = time.Second

// ended runs when the session's context ends (a lock, the certificate's
// expiry, a revocation): the client reads why in a FATAL error, as
// PostgreSQL itself tells a client whose session an administrator ends
// (57P01), and both connections close. writeClient writes whole messages
// under its lock, so the notice never splits one of the server's.
func (c *conn) ended() {
	if ue := usererr.As(context.Cause(c.ctx)); ue != nil {
		sent := make(chan struct{})
		go func() { // ends at the latest when the client connection closes below
			c.sendError("57P01", "postern: "+ue.Msg)
			close(sent)
		}()
		t := time.NewTimer(endNoticeWait)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
	for _, rw := range []io.ReadWriter{c.client, c.upstream} {
		if cl, ok := rw.(io.Closer); ok {
			_ = cl.Close()
		}
	}
}

// prepared is a prepared statement or portal.
type prepared struct {
	sql      string
	paramOID []uint32
	cols     []column
}

// pending is a statement sent upstream and not yet answered.
type pending struct {
	describe bool   // a Describe: answered by RowDescription or NoData
	name     string // Describe: statement or portal name; Execute: portal
	portal   bool   // Describe of a portal
	sql      string
	params   []string // parameter types
	start    time.Time
	gen      int // Syncs/Querys sent before it
	rows     int64
	cols     []column
	denied   string
	out      bytes.Buffer // transcript
	shown    int          // rows rendered in the transcript
}

type column struct {
	name   string
	binary bool
	mask   string // column rule label (stream)
	rmask  string // column rule label (recording)
}

// conn is one proxied connection.
type conn struct {
	p        *Proxy
	s        Session
	ctx      context.Context
	log      *slog.Logger
	client   io.ReadWriter
	upstream io.ReadWriter
	be       *pgproto3.Backend
	fe       *pgproto3.Frontend
	cancel   bool
	database string
	user     string

	stmts   map[string]prepared
	portals map[string]prepared

	wmu  sync.Mutex // client writes
	wbuf []byte

	mu       sync.Mutex // guards the fields below
	queue    []*pending
	gen      int // Syncs/Querys forwarded
	rfq      int // ReadyForQuery seen
	txStatus byte
	rec      *recorder.Session
	qlog     bytes.Buffer
	masked   bool
	start    time.Time
}

// writeClient encodes msgs and writes them to the client.
func (c *conn) writeClient(msgs ...pgproto3.BackendMessage) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	buf := c.wbuf[:0]
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return fmt.Errorf("encode %T: %w", m, err)
		}
	}
	c.wbuf = buf
	if _, err := c.client.Write(buf); err != nil {
		return fmt.Errorf("write to client: %w", err)
	}
	return nil
}

func (c *conn) writeUpstream(msgs ...pgproto3.FrontendMessage) error {
	var buf []byte
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return fmt.Errorf("encode %T: %w", m, err)
		}
	}
	if _, err := c.upstream.Write(buf); err != nil {
		return fmt.Errorf("write upstream: %w", err)
	}
	return nil
}

func (c *conn) sendError(code, msg string) {
	_ = c.writeClient(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
}

// startup handles SSL/GSS requests, the startup message and authentication.
func (c *conn) startup() error {
	for {
		msg, err := c.be.ReceiveStartupMessage()
		if err != nil {
			return fmt.Errorf("startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			c.wmu.Lock()
			_, err := c.client.Write([]byte{'N'})
			c.wmu.Unlock()
			if err != nil {
				return fmt.Errorf("startup: %w", err)
			}
		case *pgproto3.CancelRequest:
			c.cancel = true
			return c.writeUpstream(m)
		case *pgproto3.StartupMessage:
			c.user = m.Parameters["user"]
			c.database = m.Parameters["database"]
			if c.database == "" {
				c.database = c.user
			}
			if c.s.DatabaseUser != "" {
				m.Parameters["user"] = c.s.DatabaseUser
				c.user = c.s.DatabaseUser
			}
			if err := c.writeUpstream(m); err != nil {
				return err
			}
			return c.authenticate()
		default:
			return fmt.Errorf("startup: unexpected %T", msg)
		}
	}
}

// authenticate relays or answers the server's authentication exchange and
// relays everything up to the first ReadyForQuery.
func (c *conn) authenticate() error {
	own := c.s.DatabasePassword != ""
	var sc *scramClient
	for {
		msg, err := receive(c.fe.Receive)
		if err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
		if own {
			var reply pgproto3.FrontendMessage
			switch m := msg.(type) {
			case *pgproto3.AuthenticationCleartextPassword:
				reply = &pgproto3.PasswordMessage{Password: c.s.DatabasePassword}
			case *pgproto3.AuthenticationMD5Password:
				reply = &pgproto3.PasswordMessage{Password: md5Password(c.user, c.s.DatabasePassword, m.Salt)}
			case *pgproto3.AuthenticationSASL:
				if !containsString(m.AuthMechanisms, "SCRAM-SHA-256") {
					c.sendError("28000", "postern: the database offers no supported authentication")
					return errors.New("authentication: no SCRAM-SHA-256")
				}
				if sc, err = newSCRAM(c.s.DatabasePassword); err != nil {
					return err
				}
				reply = &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: sc.first()}
			case *pgproto3.AuthenticationSASLContinue:
				if sc == nil {
					return errors.New("authentication: unexpected SASL continue")
				}
				data, err := sc.final(m.Data)
				if err != nil {
					c.sendError("28000", "postern: database authentication failed")
					return err
				}
				reply = &pgproto3.SASLResponse{Data: data}
			case *pgproto3.AuthenticationSASLFinal:
				if sc == nil || sc.verify(m.Data) != nil {
					c.sendError("28000", "postern: database authentication failed")
					return errors.New("authentication: bad SCRAM server signature")
				}
				continue
			}
			if reply != nil {
				if err := c.writeUpstream(reply); err != nil {
					return err
				}
				continue
			}
		}
		if err := c.writeClient(msg); err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("authentication: %s", m.Message)
		case *pgproto3.ReadyForQuery:
			c.txStatus = m.TxStatus
			return nil
		case *pgproto3.AuthenticationCleartextPassword:
			err = c.relayAuth(pgproto3.AuthTypeCleartextPassword)
		case *pgproto3.AuthenticationMD5Password:
			err = c.relayAuth(pgproto3.AuthTypeMD5Password)
		case *pgproto3.AuthenticationSASL:
			err = c.relayAuth(pgproto3.AuthTypeSASL)
		case *pgproto3.AuthenticationSASLContinue:
			err = c.relayAuth(pgproto3.AuthTypeSASLContinue)
		}
		if err != nil {
			return err
		}
	}
}

// relayAuth passes one authentication response from the client upstream.
func (c *conn) relayAuth(authType uint32) error {
	if err := c.be.SetAuthType(authType); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	msg, err := receive(c.be.Receive)
	if err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	return c.writeUpstream(msg)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// startRecording starts the "sql" recording as s.Record says.
func (c *conn) startRecording() error {
	c.start = c.p.now()
	r := c.p.opts.Recorder
	if r == nil || c.s.Record == "off" {
		if c.s.Record == "required" && r == nil {
			return ErrRecordingUnavailable
		}
		return nil
	}
	rec, err := r.Start(c.ctx, recorder.Meta{
		ID: c.s.ID, Identity: c.s.Identity, Issuer: c.s.Issuer, IdentityKey: c.s.Requester.Key(), Role: c.s.Role, Target: c.s.Target,
		Login: c.user, Kind: "sql", Command: "database " + c.database, Term: "xterm", Width: 120, Height: 40,
	})
	if err != nil {
		c.log.Error("sql recording could not start", "err", err)
		if c.s.Record == "required" {
			return fmt.Errorf("%w: %w", ErrRecordingUnavailable, err)
		}
		return nil
	}
	c.rec = rec
	c.s.ID = rec.ID()
	_ = rec.Output([]byte(fmt.Sprintf("-- postern: %s on %s, database %s as %s\r\n", c.s.Identity, c.s.Target, c.database, c.user)))
	return nil
}

// finish stores the query log and ends the recording.
func (c *conn) finish() {
	c.mu.Lock()
	rec := c.rec
	c.rec = nil
	qlog := append([]byte(nil), c.qlog.Bytes()...)
	c.mu.Unlock()
	if rec == nil {
		return
	}
	ctx := context.WithoutCancel(c.ctx)
	sealed, err := rec.Finish(ctx, recorder.Result{})
	if err != nil {
		c.log.Error("sealing sql recording failed", "err", err)
		return
	}
	if st := c.p.opts.Store; st != nil && sealed != nil {
		key := strings.TrimSuffix(sealed.Object, filepath.Ext(sealed.Object)) + ".queries.jsonl"
		if err := st.Put(ctx, key, bytes.NewReader(qlog), int64(len(qlog)), "application/x-ndjson"); err != nil {
			c.log.Error("storing query log failed", "err", err)
		}
	}
}

// relay runs both directions until one ends.
func (c *conn) relay() error {
	errc := make(chan error, 2)
	go func() { errc <- c.fromClient() }()
	go func() { errc <- c.fromServer() }()
	err := <-errc
	if isEOF(err) {
		return nil
	}
	return err
}

func isEOF(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errTerminate) ||
		strings.Contains(err.Error(), "use of closed network connection")
}

var errTerminate = errors.New("client terminated")
