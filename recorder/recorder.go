package recorder

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/state"
)

// Overflow policies.
const (
	// OverflowBlock makes a write wait up to BlockTimeout for buffer space,
	// then fails the recording.
	OverflowBlock = "block"
	// OverflowDrop drops data while the buffer is full and records the gap.
	OverflowDrop = "drop"
)

// BlockTimeout is how long a write waits for buffer space under the block
// policy before the recording fails.
const BlockTimeout = 2 * time.Second

// Errors returned by the data path.
var (
	// ErrOverflow means the buffer stayed full for BlockTimeout.
	ErrOverflow = errors.New("recording buffer overflow")
	// ErrFinished is returned by writes after Finish.
	ErrFinished = errors.New("recording finished")
	// ErrSealPending is returned by Finish when the store did not take the
	// recording before Finish's context ended (a storage outage): the
	// recording is complete in the spool and is stored and sealed in the
	// background when the store is back (or by Recover after a restart).
	ErrSealPending = errors.New("recording kept in the spool: it is stored and sealed when storage is back")
	// ErrSpoolFull is returned by Start while the spool has less free
	// space than Options.MinSpoolFree.
	ErrSpoolFull = errors.New("recording spool is full: new recorded sessions are refused")
)

// Options configures a Recorder. The zero value of every field but Store
// works.
type Options struct {
	// Store receives finished recordings and their metadata. Required.
	Store Store
	// State is the sessions index and audit log; without it nothing is
	// indexed or audited (tests, players).
	State *state.Store
	// SpoolDir holds recordings while they are written; a directory under
	// os.TempDir() if empty.
	SpoolDir string
	// Format is "v2" (default) or "v3".
	Format string
	// BufferSize bounds each session's in-memory buffer; 1 MiB if zero.
	BufferSize int
	// OnOverflow is "block" (default) or "drop".
	OnOverflow string
	// FsyncInterval is how often a spool file is fsynced; 1s if zero.
	FsyncInterval time.Duration
	// MinSpoolFree makes Start refuse new recordings (ErrSpoolFull) while
	// the spool's file system has fewer free bytes than this; no check if
	// zero.
	MinSpoolFree int64
	// Replica names this server replica in the sessions index; Recover
	// only touches sessions of its own replica, RecoverDead those of
	// replicas that stopped sending heartbeats.
	Replica string
	// Signer signs each sealed recording's digest record (audit.SealRecord,
	// kept in the session.sealed event and the metadata JSON); seals are
	// unsigned if nil, which `postern audit verify` reports.
	Signer audit.Signer
	// CheckpointInterval is how often a recording's new bytes are copied
	// into the state store's journal, so that another replica can complete
	// it if this one dies (see journal.go); no checkpoints if zero (a single
	// replica, whose spool is on the disk it restarts with).
	CheckpointInterval time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log receives the recorder's logs; discarded if nil.
	Log *slog.Logger
	// Metrics registers the recorder's metrics; none are registered if nil.
	Metrics prometheus.Registerer
	// Sealed is called with the session id after each recording is sealed
	// (by Finish, a background seal or Recover), on the sealing goroutine:
	// it must not block. Nothing is called if nil.
	Sealed func(id string)
}

// Recorder records terminal sessions. It owns the spool directory and every
// Session it starts (each Session owns its spool file and writer
// goroutine). A nil *Recorder is not valid; a nil *Session is (it records
// nothing).
type Recorder struct {
	opts      Options
	version   int
	chunkSize int
	nbuf      int
	log       *slog.Logger
	m         *metrics

	// pool holds chunk buffers (*[]byte of cap chunkSize) shared by all
	// sessions, so an idle session holds no buffer; each session's tokens
	// bound how many it may hold at once.
	pool sync.Pool

	mu       sync.Mutex
	active   map[string]*Session
	flushing bool // flushLoop runs

	// bg is the context of background seals (ErrSealPending), cancelled
	// by Close; pending counts them.
	bg      context.Context
	stopBg  context.CancelFunc
	pending sync.WaitGroup

	// beforeWrite, if set (tests), runs before each spool write (in the
	// writer goroutine, or in Finish for the last writes).
	beforeWrite func()
}

// New returns a Recorder.
func New(opts Options) (*Recorder, error) {
	if opts.Store == nil {
		return nil, errors.New("recorder: no store")
	}
	r := &Recorder{opts: opts, active: make(map[string]*Session)}
	r.bg, r.stopBg = context.WithCancel(context.Background())
	switch opts.Format {
	case "", "v2":
		r.version = 2
	case "v3":
		r.version = 3
	default:
		return nil, fmt.Errorf("recording format %q: want v2 or v3", opts.Format)
	}
	switch opts.OnOverflow {
	case "":
		r.opts.OnOverflow = OverflowBlock
	case OverflowBlock, OverflowDrop:
	default:
		return nil, fmt.Errorf("recording on_overflow %q: want block or drop", opts.OnOverflow)
	}
	if r.opts.BufferSize <= 0 {
		r.opts.BufferSize = 1 << 20
	}
	if r.opts.FsyncInterval <= 0 {
		r.opts.FsyncInterval = time.Second
	}
	if r.opts.Now == nil {
		r.opts.Now = time.Now
	}
	if r.opts.SpoolDir == "" {
		r.opts.SpoolDir = filepath.Join(os.TempDir(), "postern-spool")
	}
	r.log = opts.Log
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	// The buffer is split into equal chunks: one being filled, the rest
	// queued for or being written by the writer goroutine.
	r.chunkSize = min(max(r.opts.BufferSize/8, 4<<10), 256<<10)
	r.nbuf = max(r.opts.BufferSize/r.chunkSize, 2)
	if err := os.MkdirAll(r.opts.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	r.pool.New = func() any {
		b := make([]byte, 0, r.chunkSize)
		return &b
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, err
	}
	r.m = m
	if l, ok := opts.Store.(interface{ SetLogger(*slog.Logger) }); ok {
		l.SetLogger(r.log.With("component", "storage"))
	}
	if c, ok := opts.Store.(prometheus.Collector); ok && opts.Metrics != nil {
		if _, err := promx.Register(opts.Metrics, c); err != nil {
			return nil, err
		}
	}
	if hr, ok := opts.Store.(HealthReporter); ok {
		hr.OnHealth(r.storageHealthChanged)
	}
	return r, nil
}

// Meta describes a session being recorded.
type Meta struct {
	// ID is the session id; a new ULID if empty.
	ID string
	// Identity is the user's or agent's username.
	Identity string
	// Issuer is the identity's issuer name.
	Issuer string
	// IdentityKey is the identity's key (certs.Identity.Key): whose
	// session it is for replay, watch, lists and search. Empty makes the
	// recording visible to auditors only.
	IdentityKey string
	// Role is the role that granted access.
	Role string
	// Target is the target name.
	Target string
	// Login is the login on the target.
	Login string
	// Kind is shell, exec, subsystem, forward or command.
	Kind string
	// Command is the exec command line or subsystem; empty for a shell.
	Command string
	// Term is the terminal type (TERM).
	Term string
	// Width and Height are the initial terminal size; 80x24 if zero.
	Width, Height int
	// Env holds the session environment; only SHELL and TERM are written to
	// the cast header.
	Env map[string]string
	// Events are more audit events of the session's start (the caller's
	// own session.start), appended after the recorder's session.start in
	// the same state transaction: one commit for both. They need
	// Options.State: Start refuses them without it.
	Events []state.Event
}

// Result is how a session ended.
type Result struct {
	// ExitStatus is the remote exit status, if one was received.
	ExitStatus *int
	// ExitSignal is the signal that ended the remote command, if any.
	ExitSignal string
	// BytesIn and BytesOut are the session's byte counts as the caller
	// measured them; the recorder's own counts are used if zero.
	BytesIn, BytesOut int64
	// Interrupted reports whether the session was cut off (shutdown, lost
	// connection, revocation).
	Interrupted bool
	// Denied reports whether policy refused the session after it began (a
	// denied or unapproved command); it wins over Interrupted.
	Denied bool
	// Error describes why the session failed, if it did (operators see it
	// in the audit log).
	Error string
	// Events are more audit events of the session's end (the caller's own
	// session.end), appended after session.sealed in the seal's state
	// transaction: one commit for all. They are appended only if Finish
	// returns a nil error; after an error, ErrSealPending included, the
	// caller appends them itself. They need Options.State: Finish refuses
	// them without it.
	Events []state.Event
}

// Sealed describes a stored, sealed recording.
type Sealed struct {
	// ID is the session id.
	ID string
	// Object is the recording's store key.
	Object string
	// MetaObject is the key of the metadata JSON.
	MetaObject string
	// Size is the recording's length in bytes.
	Size int64
	// SHA256 is its hex digest.
	SHA256 string
	// SealSeq is the audit sequence number of the session.sealed event; 0
	// without a state store.
	SealSeq int64
	// Status is finished, interrupted, denied or failed.
	Status string
}

// Start begins recording a session: it creates the spool file, writes the
// cast header, inserts the index row (status running) and appends a
// session.start audit event.
func (r *Recorder) Start(ctx context.Context, m Meta) (*Session, error) {
	now := r.opts.Now()
	if m.ID == "" {
		m.ID = ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String()
	}
	if !validID(m.ID) {
		return nil, fmt.Errorf("start recording: invalid session id %q", m.ID)
	}
	if m.Width <= 0 || m.Height <= 0 {
		m.Width, m.Height = 80, 24
	}
	if len(m.Events) > 0 && r.opts.State == nil {
		return nil, errors.New("start recording: audit events to append but no state store")
	}
	if err := r.checkSpoolFree(); err != nil {
		return nil, err
	}
	enc, _ := NewEncoder(r.version)
	s := &Session{
		r:         r,
		id:        m.ID,
		meta:      m,
		start:     now,
		enc:       enc,
		key:       CastKey(m.ID, now),
		spoolPath: filepath.Join(r.opts.SpoolDir, m.ID+".cast"),
		log:       r.log.With("session", m.ID, "identity", m.Identity, "target", m.Target),
		queue:     make(chan chunk, r.nbuf+1),
		tokens:    make(chan struct{}, r.nbuf),
		done:      make(chan struct{}),
		notifyCh:  make(chan struct{}),
		sealed:    make(chan struct{}),
		hash:      sha256.New(),
	}
	for range r.nbuf {
		s.tokens <- struct{}{}
	}
	f, err := os.OpenFile(s.spoolPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create spool file: %w", err)
	}
	s.f = f
	hdr, err := enc.AppendHeader(nil, r.header(m, now))
	if err == nil {
		_, err = f.Write(hdr)
		s.hash.Write(hdr)
		s.size = int64(len(hdr))
	}
	if err != nil {
		s.discard()
		return nil, fmt.Errorf("write cast header: %w", err)
	}
	s.written.Store(s.size)
	if ss, ok := r.opts.Store.(StreamingStore); ok {
		// The store follows the spool as it grows; Begin never waits on
		// the network.
		if s.up, err = ss.Begin(ctx, s.key, s.spoolPath, s.size); err != nil {
			s.discard()
			return nil, fmt.Errorf("begin upload: %w", err)
		}
	}
	s.row = state.Session{
		ID: m.ID, Identity: m.Identity, Issuer: m.Issuer, IdentityKey: m.IdentityKey, Role: m.Role, Target: m.Target, Login: m.Login,
		Kind: m.Kind, Command: m.Command, Start: now, Status: state.StatusRunning, Object: s.key,
		Replica: r.opts.Replica,
		Meta:    map[string]any{"format": fmt.Sprintf("v%d", r.version), "width": m.Width, "height": m.Height, "term": m.Term},
	}
	if st := r.opts.State; st != nil {
		// The index row and session.start commit together: a session is
		// either indexed and audited, or neither.
		err := st.Write(ctx, func(tx *state.Tx) error {
			if err := tx.PutSession(s.row); err != nil {
				return fmt.Errorf("index session: %w", err)
			}
			_, err := tx.Append(state.Event{
				Time: now, Type: state.EventSessionStart, Actor: m.Identity, Target: m.Target, Session: m.ID,
				Details: map[string]any{"kind": m.Kind, "login": m.Login, "role": m.Role, "command": m.Command, "object": s.key},
			})
			if err != nil {
				return fmt.Errorf("audit session start: %w", err)
			}
			for _, e := range m.Events {
				if _, err := tx.Append(e); err != nil {
					return fmt.Errorf("audit %s: %w", e.Type, err)
				}
			}
			return nil
		})
		if err != nil {
			s.discard()
			return nil, err
		}
	}
	s.lastSync.Store(time.Now().UnixNano())
	r.mu.Lock()
	r.active[m.ID] = s
	if !r.flushing {
		r.flushing = true
		go r.flushLoop() // exits once no session is active
	}
	r.mu.Unlock()
	r.m.active.Inc()
	s.log.Debug("recording started", "object", s.key)
	return s, nil
}

// header builds the cast header for m: standard fields only.
func (r *Recorder) header(m Meta, start time.Time) Header {
	var env map[string]string
	for _, k := range []string{"SHELL", "TERM"} {
		if v := m.Env[k]; v != "" {
			if env == nil {
				env = map[string]string{}
			}
			env[k] = v
		}
	}
	return Header{Width: m.Width, Height: m.Height, Timestamp: start.Unix(), Term: m.Term, Command: m.Command, Env: env}
}

// validID reports whether id is safe as a file name and object key part.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// HasState reports whether the recorder indexes and audits its sessions in a
// state store (Options.State), which Meta.Events and Result.Events need.
func (r *Recorder) HasState() bool { return r.opts.State != nil }

// Active returns the number of sessions being recorded.
func (r *Recorder) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.active)
}

// release returns a chunk buffer to the pool and its token to the session.
func (r *Recorder) release(buf *[]byte, tokens chan struct{}) {
	*buf = (*buf)[:0]
	r.pool.Put(buf)
	tokens <- struct{}{}
}

func (r *Recorder) lookup(id string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active[id]
}

func (r *Recorder) forget(id string) {
	r.mu.Lock()
	delete(r.active, id)
	r.mu.Unlock()
	r.m.active.Dec()
}

// checkSpoolFree returns ErrSpoolFull (with the figures) when the spool's
// file system has less free space than Options.MinSpoolFree.
func (r *Recorder) checkSpoolFree() error {
	if r.opts.MinSpoolFree <= 0 {
		return nil
	}
	free, err := freeBytes(r.opts.SpoolDir)
	if err != nil {
		return fmt.Errorf("check spool space: %w", err)
	}
	if free < r.opts.MinSpoolFree {
		r.m.errors.WithLabelValues("spool_full").Inc()
		r.log.Error("recording spool is full: refusing new recorded sessions", "free_bytes", free, "min_free_bytes", r.opts.MinSpoolFree)
		return fmt.Errorf("%w (%d MiB free, %d MiB required)", ErrSpoolFull, free>>20, r.opts.MinSpoolFree>>20)
	}
	return nil
}

// Close stops the background seals of recordings whose Finish returned
// ErrSealPending and waits for them; their spools stay for Recover at the
// next start. Sessions still recording are not affected.
func (r *Recorder) Close() error {
	r.stopBg()
	r.pending.Wait()
	return nil
}
