package state

import (
	"context"
	"database/sql"
	"fmt"
)

// The statements every session runs are prepared once per database
// connection and reused: parsing SQL was a tenth of the CPU time of a short
// recorded session. database/sql keeps a prepared statement per pooled
// connection and re-prepares it on connections it has not seen.
const (
	sqlChainHead   = `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`
	sqlInsertEvent = `INSERT INTO audit_events (seq, time, type, actor, source, target, session, details, prev, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlDeleteSession = `DELETE FROM sessions WHERE id = ?`
	sqlInsertSession = `INSERT INTO sessions (` + sessionColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlIsRevoked = `SELECT COUNT(*) FROM revocations WHERE serial = ?`
)

// stmt returns the prepared statement for query, preparing it on first use.
// Only the constant queries above are cached.
func (s *Store) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare statement: %w", err)
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// closeStmts closes every cached statement.
func (s *Store) closeStmts() {
	s.stmts.Range(func(k, v any) bool {
		v.(*sql.Stmt).Close()
		s.stmts.Delete(k)
		return true
	})
}

// txStmt returns query's prepared statement bound to t's transaction.
func (t *Tx) txStmt(query string) (*sql.Stmt, error) {
	st, err := t.s.stmt(t.ctx, query)
	if err != nil {
		return nil, err
	}
	return t.tx.StmtContext(t.ctx, st), nil
}
