package state

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// pgLockKey is the key of the transaction-scoped advisory lock every write
// transaction of the PostgreSQL store takes first: the equivalent of
// SQLite's BEGIN IMMEDIATE, so that read-then-write transactions (the audit
// chain head, session replacement, approval votes, migrations) are serialised
// across every replica sharing the database. ASCII "postern\x01".
const pgLockKey int64 = 0x706f737465726e01

// openPostgres opens a database/sql handle on the PostgreSQL database named
// by rawURL (postgres:// or postgresql://, libpq keywords in the query
// string). The handle speaks the store's portable SQL: '?' placeholders are
// rewritten to $n, LIKE is case-insensitive (ILIKE) as in SQLite, and every
// transaction holds the store's advisory lock.
func openPostgres(ctx context.Context, rawURL string) (*sql.DB, *pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		// pgx errors can echo the URL, password included: keep them out.
		return nil, nil, errors.New("state store: not a valid postgres:// URL")
	}
	db := sql.OpenDB(pgConnector{inner: stdlib.GetConnector(*cfg)})
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("connect to state store %s: %w", redactURL(rawURL), err)
	}
	return db, cfg, nil
}

// redactURL returns rawURL without its password, for messages.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "postgres://…"
	}
	return u.Redacted()
}

// isPostgresURL reports whether rawURL names a PostgreSQL state store.
func isPostgresURL(rawURL string) bool {
	return strings.HasPrefix(rawURL, "postgres://") || strings.HasPrefix(rawURL, "postgresql://")
}

// pgConnector wraps pgx's database/sql connector with the portable-SQL
// rewriting of pgConn.
type pgConnector struct{ inner driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{Conn: conn.(*stdlib.Conn)}, nil
}

func (c pgConnector) Driver() driver.Driver { return c.inner.Driver() }

// pgConn is one connection: pgx's, with queries rebound and transactions
// serialised by the advisory lock.
type pgConn struct{ *stdlib.Conn }

var (
	_ driver.ConnBeginTx        = (*pgConn)(nil)
	_ driver.ExecerContext      = (*pgConn)(nil)
	_ driver.QueryerContext     = (*pgConn)(nil)
	_ driver.ConnPrepareContext = (*pgConn)(nil)
	_ driver.NamedValueChecker  = (*pgConn)(nil)
	_ driver.SessionResetter    = (*pgConn)(nil)
	_ driver.Pinger             = (*pgConn)(nil)
)

func (c *pgConn) Prepare(query string) (driver.Stmt, error) { return c.Conn.Prepare(rebind(query)) }

func (c *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, rebind(query))
}

func (c *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.ExecContext(ctx, rebind(query), args)
}

func (c *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.QueryContext(ctx, rebind(query), args)
}

func (c *pgConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// BeginTx starts a transaction and takes the store's advisory lock in it;
// the lock is released when the transaction ends.
func (c *pgConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := c.Conn.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.Conn.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`,
		[]driver.NamedValue{{Ordinal: 1, Value: pgLockKey}}); err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("take state store lock: %w", err)
	}
	return tx, nil
}

// rebind rewrites the store's portable SQL for PostgreSQL: '?' placeholders
// outside string literals become $1, $2, …, and LIKE becomes ILIKE (SQLite's
// LIKE ignores ASCII case).
func rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	quoted := false
	for i := 0; i < len(q); i++ {
		ch := q[i]
		switch {
		case ch == '\'':
			quoted = !quoted
		case ch == '?' && !quoted:
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		case !quoted && (ch == 'L' || ch == 'l') && isWordAt(q, i, "LIKE"):
			b.WriteString("ILIKE")
			i += len("LIKE") - 1
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

// isWordAt reports whether q has the keyword w (case-insensitively) as a
// whole word at i.
func isWordAt(q string, i int, w string) bool {
	if i+len(w) > len(q) || !strings.EqualFold(q[i:i+len(w)], w) {
		return false
	}
	ident := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	if i > 0 && ident(q[i-1]) {
		return false
	}
	return i+len(w) == len(q) || !ident(q[i+len(w)])
}

// notifier delivers Notify payloads to Subscribe channels: through
// PostgreSQL LISTEN/NOTIFY (every replica) or, for SQLite, within the
// process.
type notifier struct {
	pg *pgx.ConnConfig // nil: in-process only

	mu   sync.Mutex
	subs map[string]map[chan string]struct{} // SQLite: channel -> subscribers
}

// Notify sends payload to every subscriber of channel: on every replica for
// PostgreSQL (pg_notify, delivered when the sending transaction commits),
// within this process for SQLite. Delivery is best effort: a subscriber
// that is not reading loses payloads rather than blocking the sender, so
// payloads should be hints ("approval X changed") and readers re-read the
// store. channel is a plain identifier (letters, digits, '_').
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if !validChannel(channel) {
		return fmt.Errorf("notify: invalid channel name %q", channel)
	}
	if s.notify.pg != nil {
		if _, err := s.db.ExecContext(ctx, `SELECT pg_notify(?, ?)`, channel, payload); err != nil {
			return fmt.Errorf("notify %s: %w", channel, err)
		}
		return nil
	}
	s.notify.mu.Lock()
	defer s.notify.mu.Unlock()
	for ch := range s.notify.subs[channel] {
		select {
		case ch <- payload:
		default:
		}
	}
	return nil
}

// Subscribe returns a channel that receives the payload of every Notify on
// channel (from any replica sharing a PostgreSQL store) until ctx ends; then
// it is closed. The subscription is active when Subscribe returns. For
// PostgreSQL it holds one dedicated connection; if that connection fails
// the channel is closed early, and callers should fall back to re-reading
// the store and subscribe again.
func (s *Store) Subscribe(ctx context.Context, channel string) (<-chan string, error) {
	if !validChannel(channel) {
		return nil, fmt.Errorf("subscribe: invalid channel name %q", channel)
	}
	out := make(chan string, 64)
	if s.notify.pg == nil {
		s.notify.mu.Lock()
		if s.notify.subs == nil {
			s.notify.subs = map[string]map[chan string]struct{}{}
		}
		if s.notify.subs[channel] == nil {
			s.notify.subs[channel] = map[chan string]struct{}{}
		}
		s.notify.subs[channel][out] = struct{}{}
		s.notify.mu.Unlock()
		go func() {
			<-ctx.Done()
			s.notify.mu.Lock()
			delete(s.notify.subs[channel], out)
			s.notify.mu.Unlock()
			close(out)
		}()
		return out, nil
	}
	conn, err := pgx.ConnectConfig(ctx, s.notify.pg.Copy())
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	go func() {
		defer close(out)
		defer conn.Close(context.Background())
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("state store subscription ended", "channel", channel, "err", err)
				}
				return
			}
			select {
			case out <- n.Payload:
			default: // a reader that falls behind loses hints, never blocks the listener
			}
		}
	}()
	return out, nil
}

func validChannel(c string) bool {
	if c == "" || len(c) > 63 {
		return false
	}
	for i := 0; i < len(c); i++ {
		ch := c[i]
		if !(ch == '_' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' && i > 0) {
			return false
		}
	}
	return true
}
