package state

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Search across recordings.
//
// Each sealed recording is broken into entries: the pieces of text an
// auditor looks for (a command line, a line typed in a shell, a SQL
// statement, an SFTP operation, a line of terminal output), each with its
// offset in the recording. The entries of a session are written by
// IndexSession and found by Search.
//
// Words. Both backends index the same words: maximal runs of letters and
// digits (Unicode), lowercased; everything else separates words. SQLite
// indexes the text with FTS5's unicode61 tokenizer (no diacritic folding),
// which splits the same way; on PostgreSQL the store builds the tsvector
// itself from those words (positions included, for phrases) rather than
// leave it to a text search configuration whose parser would keep
// "/etc/sudoers" or "a.b@c.d" whole. So "/etc/sudoers" is the phrase
// "etc sudoers" everywhere, and a query finds the same entries on both.
//
// Order. An entry's id is the start of its session in Unix milliseconds
// shifted left by searchIDShift, plus its number within that millisecond,
// so ids sort by session start: newest-first results read the index
// backwards with no sort, and a since/until filter is an id range. Sessions
// that start in the same millisecond share the range, one after the other.

// Search entry kinds.
const (
	// SearchCommand is an exec command line, or the program of a command
	// target.
	SearchCommand = "command"
	// SearchInput is a line typed in an interactive session (after
	// masking; lines typed at a password prompt are never indexed).
	SearchInput = "input"
	// SearchSQL is a statement sent to a PostgreSQL target (masked).
	SearchSQL = "sql"
	// SearchSFTP is an SFTP file operation.
	SearchSFTP = "sftp"
	// SearchOutput is a line of terminal output (escape sequences
	// removed; masked as recorded).
	SearchOutput = "output"
)

// Limits of the search index.
const (
	// MaxSearchEntryText bounds the text of one entry in bytes; IndexSession
	// cuts longer text at a UTF-8 boundary.
	MaxSearchEntryText = 1024
	// MaxSearchEntries bounds the entries of one session.
	MaxSearchEntries = 1 << 16
	// MaxSearchLimit bounds the hits one search returns.
	MaxSearchLimit = 1000
	// DefaultSearchLimit is the number of hits a search returns when its
	// limit is zero.
	DefaultSearchLimit = 100

	searchIDShift    = 20 // ids per session-start millisecond: 2^20
	searchBatch      = 500
	maxSearchTerms   = 16
	maxSearchWordLen = 128
)

// The statements that write entries, prepared once per connection (see
// Store.stmt).
const (
	sqlInsertSearch    = `INSERT INTO search_entries (id, session, kind, offset_ms, text) VALUES (?, ?, ?, ?, ?)`
	sqlInsertSearchFTS = `INSERT INTO search_fts (rowid, text) VALUES (?, ?)`
	sqlInsertSearchPG  = `INSERT INTO search_entries (id, session, kind, offset_ms, text, words) VALUES (?, ?, ?, ?, ?, CAST(? AS tsvector))`
)

// Indexing states in search_sessions.
const (
	searchIndexing = "indexing"
	searchDone     = "done"
	searchFailed   = "failed"
)

// SearchEntry is one piece of searchable text of a recording.
type SearchEntry struct {
	// Kind is one of the Search* kinds.
	Kind string `json:"kind"`
	// Offset is the entry's time in the recording.
	Offset time.Duration `json:"-"`
	// Text is the text as shown to an auditor.
	Text string `json:"text"`
}

// SearchQuery is one search: text in the search syntax (see
// ParseSearchQuery) and filters on the session.
type SearchQuery struct {
	// Text is what to look for.
	Text string
	// Identity keeps sessions of this username only; any if empty.
	Identity string
	// Issuer keeps sessions of identities of this issuer only; any if
	// empty.
	Issuer string
	// IdentityKey keeps sessions of this identity key only (Session.IdentityKey);
	// any if empty. Callers that search one identity's own recordings must
	// refuse an empty key themselves.
	IdentityKey string
	// Target keeps sessions on this target only; any if empty.
	Target string
	// Since keeps sessions that started at or after it; unbounded if zero.
	Since time.Time
	// Until keeps sessions that started before it; unbounded if zero.
	Until time.Time
	// Limit caps the hits; DefaultSearchLimit if zero, at most
	// MaxSearchLimit.
	Limit int
}

// SearchHit is one entry that matched, with its session.
type SearchHit struct {
	// Session is the session id.
	Session string `json:"session"`
	// Identity is the session's username.
	Identity string `json:"identity"`
	// Issuer is the session's issuer name.
	Issuer string `json:"issuer"`
	// IdentityKey is the session's identity key; empty for sessions
	// recorded before sessions had keys.
	IdentityKey string `json:"identity_key"`
	// Target is the session's target.
	Target string `json:"target"`
	// Login is the session's login on the target.
	Login string `json:"login"`
	// SessionKind is the session's kind (shell, exec, sql, …).
	SessionKind string `json:"session_kind"`
	// Start is when the session started.
	Start time.Time `json:"start"`
	// Kind is the entry's kind (command, input, sql, sftp, output).
	Kind string `json:"kind"`
	// OffsetMS is the entry's time in the recording, in milliseconds.
	OffsetMS int64 `json:"offset_ms"`
	// Text is the entry's text.
	Text string `json:"text"`
}

// SearchStats describes the search index.
type SearchStats struct {
	// Sessions counts indexed sessions.
	Sessions int64
	// Entries counts index entries.
	Entries int64
	// Bytes is the total length of the entries' text.
	Bytes int64
	// Failed counts sessions whose indexing failed.
	Failed int64
}

// SearchQueryError is a query that cannot be run; its message says why, in
// words fit for the person who typed it.
type SearchQueryError struct{ Msg string }

func (e *SearchQueryError) Error() string { return e.Msg }

// SearchTerms is a parsed query: every term must match one entry.
type SearchTerms []SearchTerm

// SearchTerm is one term of a query: a word, or a phrase of words that must
// follow each other; with Prefix, the last word matches any word it starts.
type SearchTerm struct {
	// Words are lowercased index words.
	Words []string
	// Prefix makes the last word a prefix.
	Prefix bool
}

// ParseSearchQuery parses the search syntax:
//
//	drop table          entries with both words, anywhere
//	"drop table"        the phrase: the words next to each other, in order
//	/etc/sudoers        punctuation separates words, so this is the phrase "etc sudoers"
//	sudo*               words starting with sudo
//
// Case is ignored. It returns a *SearchQueryError for a query with no
// words, more than 16 terms, a word longer than 128 bytes or an unclosed
// quote.
func ParseSearchQuery(text string) (SearchTerms, error) {
	var terms SearchTerms
	add := func(chunk string, quoted bool) error {
		prefix := false
		if !quoted {
			trimmed := strings.TrimRight(chunk, "*")
			prefix = len(trimmed) < len(chunk)
			chunk = trimmed
		} else if strings.HasSuffix(chunk, "*") {
			prefix = true
			chunk = strings.TrimSuffix(chunk, "*")
		}
		var words []string
		for w := range searchWords(chunk) {
			if len(w.word) > maxSearchWordLen {
				return &SearchQueryError{Msg: "a search word is longer than 128 bytes"}
			}
			words = append(words, w.word)
		}
		if len(words) == 0 {
			return nil
		}
		terms = append(terms, SearchTerm{Words: words, Prefix: prefix})
		return nil
	}
	rest := strings.TrimSpace(text)
	for rest != "" {
		var err error
		if rest[0] == '"' {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return nil, &SearchQueryError{Msg: "a quote is not closed"}
			}
			phrase := rest[1 : 1+end]
			rest = rest[2+end:]
			if strings.HasPrefix(rest, "*") {
				phrase += "*"
				rest = rest[1:]
			}
			err = add(phrase, true)
		} else {
			end := strings.IndexFunc(rest, func(r rune) bool { return unicode.IsSpace(r) || r == '"' })
			if end < 0 {
				end = len(rest)
			}
			err = add(rest[:end], false)
			rest = rest[end:]
		}
		if err != nil {
			return nil, err
		}
		rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
	}
	if len(terms) == 0 {
		return nil, &SearchQueryError{Msg: "the search has no words to look for"}
	}
	if len(terms) > maxSearchTerms {
		return nil, &SearchQueryError{Msg: "the search has more than 16 terms"}
	}
	return terms, nil
}

// fts5 renders the terms as an FTS5 query: each term a quoted phrase (the
// words hold only letters and digits, so they need no escaping), joined by
// AND; a prefix term ends with '*'.
func (t SearchTerms) fts5() string {
	var b strings.Builder
	for i, term := range t {
		if i > 0 {
			b.WriteString(" AND ")
		}
		b.WriteString(`"` + strings.Join(term.Words, " ") + `"`)
		if term.Prefix {
			b.WriteString("*")
		}
	}
	return b.String()
}

// tsquery renders the terms as a PostgreSQL tsquery literal: words quoted,
// a phrase joined by <->, a prefix word marked :*, terms joined by &.
func (t SearchTerms) tsquery() string {
	var b strings.Builder
	for i, term := range t {
		if i > 0 {
			b.WriteString(" & ")
		}
		if len(term.Words) > 1 {
			b.WriteString("(")
		}
		for j, w := range term.Words {
			if j > 0 {
				b.WriteString(" <-> ")
			}
			b.WriteString("'" + w + "'")
			if term.Prefix && j == len(term.Words)-1 {
				b.WriteString(":*")
			}
		}
		if len(term.Words) > 1 {
			b.WriteString(")")
		}
	}
	return b.String()
}

// Highlights returns the byte ranges of the words of text that match a word
// of the terms, for showing a hit.
func (t SearchTerms) Highlights(text string) [][2]int {
	var out [][2]int
	for w := range searchWords(text) {
		for _, term := range t {
			if matchesTerm(term, w.word) {
				out = append(out, [2]int{w.start, w.end})
				break
			}
		}
	}
	return out
}

func matchesTerm(term SearchTerm, word string) bool {
	for i, tw := range term.Words {
		if word == tw || (term.Prefix && i == len(term.Words)-1 && strings.HasPrefix(word, tw)) {
			return true
		}
	}
	return false
}

// searchWord is one index word of a text and where it is.
type searchWord struct {
	word       string // lowercased
	start, end int    // byte range in the text
}

// isWordRune reports whether r belongs to a word: a letter, a digit or a
// private-use character, as FTS5's unicode61 tokenizer counts them.
func isWordRune(r rune) bool {
	return r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') ||
		r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.Is(unicode.Co, r))
}

// searchWords yields the index words of text in order.
func searchWords(text string) func(yield func(searchWord) bool) {
	return func(yield func(searchWord) bool) {
		start := -1
		for i, r := range text {
			if isWordRune(r) {
				if start < 0 {
					start = i
				}
				continue
			}
			if start >= 0 {
				if !yield(searchWord{strings.ToLower(text[start:i]), start, i}) {
					return
				}
				start = -1
			}
		}
		if start >= 0 {
			yield(searchWord{strings.ToLower(text[start:]), start, len(text)})
		}
	}
}

// tsvector returns the PostgreSQL tsvector literal of text's words with
// their positions (1-based, capped at PostgreSQL's 16383), and whether text
// has any word.
func tsvector(text string) (string, bool) {
	var b strings.Builder
	pos := 0
	for w := range searchWords(text) {
		if len(w.word) > 2046/4 { // PostgreSQL bounds a lexeme to 2046 bytes
			continue
		}
		pos++
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("'" + w.word + "':" + strconv.Itoa(min(pos, 16383)))
	}
	return b.String(), b.Len() > 0
}

// truncateUTF8 cuts s to at most n bytes at a character boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// SearchClaim makes IndexSession index a session only for one indexer at
// a time: the first write records Replica as the session's indexer, unless
// the session is indexed already, or another indexer's claim is younger
// than Stale. A session whose indexing failed may be claimed again.
type SearchClaim struct {
	// Replica names the indexer.
	Replica string
	// Stale is how old another indexer's claim may be before it is taken
	// over (that indexer is presumed gone).
	Stale time.Duration
}

// ErrSearchClaimed is IndexSession's answer, with a SearchClaim, for a
// session that is indexed already or that another indexer holds.
var ErrSearchClaimed = errors.New("search: the session is indexed, or another indexer holds it")

// claimSearch takes the claim c on session id in t's transaction and
// reports whether it did.
func (t *Tx) claimSearch(id string, c SearchClaim) (bool, error) {
	now := t.s.now()
	var st, at string
	err := t.tx.QueryRowContext(t.ctx, `SELECT state, claimed FROM search_sessions WHERE session = ?`, id).Scan(&st, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = t.tx.ExecContext(t.ctx, `INSERT INTO search_sessions (session, state, claimed, replica) VALUES (?, ?, ?, ?)`,
			id, searchIndexing, formatTime(now), c.Replica)
		return err == nil, err
	case err != nil:
		return false, fmt.Errorf("claim search indexing: %w", err)
	}
	if st == searchDone {
		return false, nil
	}
	if st == searchIndexing {
		if when, err := parseTime(at); err == nil && now.Sub(when) < c.Stale {
			return false, nil
		}
	}
	_, err = t.tx.ExecContext(t.ctx, `UPDATE search_sessions SET state = ?, claimed = ?, replica = ?, error = '' WHERE session = ?`,
		searchIndexing, formatTime(now), c.Replica, id)
	return err == nil, err
}

// IndexSession replaces the search entries of session id, which started at
// start, with entries, and marks the session indexed (truncated says that
// its text was cut to the indexing limit). Entries without a word are
// skipped, text is cut to MaxSearchEntryText and at most MaxSearchEntries
// are kept. The entries go in writes of at most 500 (one write for most
// sessions), so that a large recording never holds up the audit chain for
// long; a session shows as indexed only with the last.
//
// With a claim, the session is indexed only if the claim can be taken (see
// SearchClaim); otherwise IndexSession returns ErrSearchClaimed and writes
// nothing. Without one, the entries are replaced unconditionally.
func (s *Store) IndexSession(ctx context.Context, id string, start time.Time, entries []SearchEntry, truncated bool, claim *SearchClaim) error {
	if len(entries) > MaxSearchEntries {
		entries, truncated = entries[:MaxSearchEntries], true
	}
	base := max(start.UnixMilli(), 0) << searchIDShift
	var count, size int64
	// One write for a small session; for a large one the first write also
	// drops the old entries and the last marks the session indexed.
	for first := true; first || len(entries) > 0; first = false {
		batch := entries[:min(searchBatch, len(entries))]
		entries = entries[len(batch):]
		last := len(entries) == 0
		err := s.Write(ctx, func(t *Tx) error {
			if first {
				if claim != nil {
					ok, err := t.claimSearch(id, *claim)
					if err != nil {
						return err
					}
					if !ok {
						return ErrSearchClaimed
					}
				}
				if err := t.deleteSearch(id); err != nil {
					return err
				}
			}
			n, b, err := t.insertSearch(id, base, batch)
			if err != nil {
				return err
			}
			count, size = count+n, size+b
			if last {
				return t.searchDone(id, count, size, truncated)
			}
			return nil
		})
		if errors.Is(err, ErrSearchClaimed) {
			return err
		}
		if err != nil {
			return fmt.Errorf("index session %s: %w", id, err)
		}
	}
	return nil
}

// searchDone marks session id indexed with count entries of size bytes.
func (t *Tx) searchDone(id string, count, size int64, truncated bool) error {
	trunc := 0
	if truncated {
		trunc = 1
	}
	res, err := t.tx.ExecContext(t.ctx, `UPDATE search_sessions SET state = ?, entries = ?, bytes = ?, truncated = ?, error = '' WHERE session = ?`,
		searchDone, count, size, trunc, id)
	if err != nil {
		return fmt.Errorf("mark session indexed: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	// Indexed without a claim (a direct call): record it all the same.
	if _, err = t.tx.ExecContext(t.ctx, `INSERT INTO search_sessions (session, state, claimed, entries, bytes, truncated)
		VALUES (?, ?, ?, ?, ?, ?)`, id, searchDone, formatTime(t.s.now()), count, size, trunc); err != nil {
		return fmt.Errorf("mark session indexed: %w", err)
	}
	return nil
}

// FailSearch records that indexing session id failed (errText says why,
// for operators); backfill does not retry it by itself.
func (s *Store) FailSearch(ctx context.Context, id, errText string) error {
	errText = truncateUTF8(errText, 500)
	return s.Write(ctx, func(t *Tx) error {
		res, err := t.tx.ExecContext(t.ctx, `UPDATE search_sessions SET state = ?, error = ? WHERE session = ?`,
			searchFailed, errText, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		_, err = t.tx.ExecContext(t.ctx, `INSERT INTO search_sessions (session, state, claimed, error) VALUES (?, ?, ?, ?)`,
			id, searchFailed, formatTime(t.s.now()), errText)
		return err
	})
}

// deleteSearch removes the entries of session id.
func (t *Tx) deleteSearch(id string) error {
	if !t.s.isPostgres() {
		// An external-content FTS5 table is told what it forgets.
		if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO search_fts (search_fts, rowid, text)
			SELECT 'delete', id, text FROM search_entries WHERE session = ?`, id); err != nil {
			return fmt.Errorf("delete search index: %w", err)
		}
	}
	if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM search_entries WHERE session = ?`, id); err != nil {
		return fmt.Errorf("delete search entries: %w", err)
	}
	return nil
}

// insertSearch adds entries of session id after the last id in base's
// range, and returns how many it added and their text length.
func (t *Tx) insertSearch(id string, base int64, entries []SearchEntry) (int64, int64, error) {
	var last sql.NullInt64
	if err := t.tx.QueryRowContext(t.ctx, `SELECT MAX(id) FROM search_entries WHERE id >= ? AND id < ?`,
		base, base+1<<searchIDShift).Scan(&last); err != nil {
		return 0, 0, fmt.Errorf("search entry ids: %w", err)
	}
	next := base
	if last.Valid {
		next = last.Int64 + 1
	}
	pg := t.s.isPostgres()
	var n, size int64
	for _, e := range entries {
		text := truncateUTF8(strings.ToValidUTF8(e.Text, "\uFFFD"), MaxSearchEntryText)
		var words string
		ok := false
		if pg {
			words, ok = tsvector(text)
		} else {
			ok = strings.IndexFunc(text, isWordRune) >= 0
		}
		if !ok {
			continue
		}
		if next >= base+1<<searchIDShift {
			return n, size, errors.New("search index: too many entries for sessions started in one millisecond")
		}
		off := e.Offset.Milliseconds()
		var err error
		if pg {
			var st *sql.Stmt
			if st, err = t.txStmt(sqlInsertSearchPG); err == nil {
				_, err = st.ExecContext(t.ctx, next, id, e.Kind, off, text, words)
			}
		} else {
			var st, fts *sql.Stmt
			if st, err = t.txStmt(sqlInsertSearch); err == nil {
				if fts, err = t.txStmt(sqlInsertSearchFTS); err == nil {
					if _, err = st.ExecContext(t.ctx, next, id, e.Kind, off, text); err == nil {
						_, err = fts.ExecContext(t.ctx, next, text)
					}
				}
			}
		}
		if err != nil {
			return n, size, fmt.Errorf("insert search entry: %w", err)
		}
		next++
		n++
		size += int64(len(text))
	}
	return n, size, nil
}

// UnindexedSessions returns up to limit sealed sessions that have no search
// entries yet (or whose indexing claim is older than stale), newest first.
func (s *Store) UnindexedSessions(ctx context.Context, limit int, stale time.Duration) ([]string, error) {
	return queryAll(ctx, s.db, "list unindexed sessions", `SELECT s.id FROM sessions s
		LEFT JOIN search_sessions x ON x.session = s.id
		WHERE s.status <> ? AND s.object <> '' AND (x.session IS NULL OR (x.state = ? AND x.claimed < ?))
		ORDER BY s.start_time DESC LIMIT ?`,
		[]any{StatusRunning, searchIndexing, formatTime(s.now().Add(-stale)), limit},
		func(r rowScanner) (string, error) {
			var id string
			err := r.Scan(&id)
			return id, err
		})
}

// SessionEvents returns the audit events of session id whose type is one of
// types (every type if none), in sequence order, at most limit (1000 if
// zero or less).
func (s *Store) SessionEvents(ctx context.Context, id string, limit int, types ...string) ([]Event, error) {
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT ` + eventColumns + ` FROM audit_events WHERE session = ?`
	args := []any{id}
	if len(types) > 0 {
		q += ` AND type IN (?` + strings.Repeat(", ?", len(types)-1) + `)`
		for _, t := range types {
			args = append(args, t)
		}
	}
	q += ` ORDER BY seq LIMIT ?`
	args = append(args, limit)
	return queryAll(ctx, s.db, "query session events", q, args, scanEvent)
}

// Search returns the entries matching q, newest session first and, within
// a session, in recording order. It returns a *SearchQueryError for a query
// that cannot be parsed.
func (s *Store) Search(ctx context.Context, q SearchQuery) ([]SearchHit, error) {
	terms, err := ParseSearchQuery(q.Text)
	if err != nil {
		return nil, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultSearchLimit
	}
	limit = min(limit, MaxSearchLimit)
	lo, hi := int64(0), int64(math.MaxInt64) // the id range of since and until
	if !q.Since.IsZero() {
		lo = max(q.Since.UnixMilli(), 0) << searchIDShift
	}
	if !q.Until.IsZero() {
		hi = max(q.Until.UnixMilli(), 0) << searchIDShift
	}
	var rows []searchRow
	if s.isPostgres() {
		rows, err = s.searchPostgres(ctx, terms, q, lo, hi, limit)
	} else {
		// The FTS table drives the query, read backwards by row id: it
		// stops as soon as limit rows pass the filters.
		where, args := searchFilters(q, "f.rowid", lo, hi)
		rows, err = s.searchRows(ctx, `SELECT `+searchColumns+` FROM search_fts f JOIN search_entries e ON e.id = f.rowid
			JOIN sessions s ON s.id = e.session WHERE search_fts MATCH ?`+where+` ORDER BY f.rowid DESC LIMIT ?`,
			append(append([]any{terms.fts5()}, args...), limit))
	}
	if err != nil {
		return nil, err
	}
	// Ids put sessions newest first; within a session, show the hits in
	// recording order.
	first := map[string]int{}
	for i, r := range rows {
		if _, ok := first[r.hit.Session]; !ok {
			first[r.hit.Session] = i
		}
	}
	slices.SortStableFunc(rows, func(a, b searchRow) int {
		if fa, fb := first[a.hit.Session], first[b.hit.Session]; fa != fb {
			return fa - fb
		}
		if c := cmp.Compare(a.hit.OffsetMS, b.hit.OffsetMS); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	hits := make([]SearchHit, len(rows))
	for i, r := range rows {
		hits[i] = r.hit
	}
	return hits, nil
}

// searchColumns are the columns a search reads: e is the entry, s its session.
const searchColumns = `e.id, e.session, e.kind, e.offset_ms, e.text, s.identity, s.issuer, s.identity_key, s.target, s.login, s.kind, s.start_time`

// searchRow is a hit and its entry id.
type searchRow struct {
	id  int64
	hit SearchHit
}

// searchRows runs a query of searchColumns.
func (s *Store) searchRows(ctx context.Context, query string, args []any) ([]searchRow, error) {
	return queryAll(ctx, s.db, "search", query, args, func(r rowScanner) (searchRow, error) {
		var x searchRow
		var start string
		err := r.Scan(&x.id, &x.hit.Session, &x.hit.Kind, &x.hit.OffsetMS, &x.hit.Text, &x.hit.Identity, &x.hit.Issuer,
			&x.hit.IdentityKey, &x.hit.Target, &x.hit.Login, &x.hit.SessionKind, &start)
		if err == nil {
			x.hit.Start, err = parseTime(start)
		}
		return x, err
	})
}

// searchFilters returns the conditions (each starting with AND) and
// arguments of q's id range (on idCol) and session filters.
func searchFilters(q SearchQuery, idCol string, lo, hi int64) (string, []any) {
	var b strings.Builder
	var args []any
	if lo > 0 {
		b.WriteString(` AND ` + idCol + ` >= ?`)
		args = append(args, lo)
	}
	if hi < math.MaxInt64 {
		b.WriteString(` AND ` + idCol + ` < ?`)
		args = append(args, hi)
	}
	if q.Identity != "" {
		b.WriteString(` AND s.identity = ?`)
		args = append(args, q.Identity)
	}
	if q.Issuer != "" {
		b.WriteString(` AND s.issuer = ?`)
		args = append(args, q.Issuer)
	}
	if q.IdentityKey != "" {
		b.WriteString(` AND s.identity_key = ?`)
		args = append(args, q.IdentityKey)
	}
	if q.Target != "" {
		b.WriteString(` AND s.target = ?`)
		args = append(args, q.Target)
	}
	return b.String(), args
}

// pgRecentEntries is how many of the newest entries the first phase of a
// PostgreSQL search tests one by one (a variable for tests).
var pgRecentEntries = 5000

// searchPostgres runs a search in two phases, because neither of the plans
// PostgreSQL can choose is fast for every query. First the newest
// pgRecentEntries entries of the range are tested one by one, walking the
// primary key backwards: a common word fills the page there at once (taken
// from the GIN index, its every match would be read and sorted). If that
// does not fill the page, the older entries' matches are taken from the
// GIN index, which is quick for the rare words that reach this phase (the
// planner on its own walks the whole key testing every row, which took
// seconds for a word that matches nothing).
func (s *Store) searchPostgres(ctx context.Context, terms SearchTerms, q SearchQuery, lo, hi int64, limit int) ([]searchRow, error) {
	tsq := terms.tsquery()
	where, args := searchFilters(q, "e.id", 0, math.MaxInt64)
	recent := `SELECT id, session, kind, offset_ms, text, words FROM search_entries WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?`
	rows, err := s.searchRows(ctx, `SELECT `+searchColumns+` FROM (`+recent+`) e JOIN sessions s ON s.id = e.session
		WHERE e.words @@ CAST(? AS tsquery)`+where+` ORDER BY e.id DESC LIMIT ?`,
		append(append([]any{lo, hi, pgRecentEntries, tsq}, args...), limit))
	if err != nil || len(rows) >= limit {
		return rows, err
	}
	// Where the first phase stopped.
	var oldest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(id) FROM (SELECT id FROM search_entries WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?) r`,
		lo, hi, pgRecentEntries).Scan(&oldest); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	boundary := hi
	if oldest.Valid {
		boundary = oldest.Int64
	}
	// The CTE holds the text search alone: with the id range beside it the
	// planner walks the primary key again.
	older, err := s.searchRows(ctx, `WITH m AS MATERIALIZED (SELECT id FROM search_entries WHERE words @@ CAST(? AS tsquery))
		SELECT `+searchColumns+` FROM m JOIN search_entries e ON e.id = m.id JOIN sessions s ON s.id = e.session
		WHERE m.id >= ? AND m.id < ?`+where+` ORDER BY e.id DESC LIMIT ?`,
		append(append([]any{tsq, lo, boundary}, args...), limit-len(rows)))
	if err != nil {
		return nil, err
	}
	return append(rows, older...), nil
}

// SearchStats counts what the search index holds.
func (s *Store) SearchStats(ctx context.Context) (SearchStats, error) {
	var st SearchStats
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM search_sessions WHERE state = 'done'),
		(SELECT COUNT(*) FROM search_sessions WHERE state = 'failed'),
		(SELECT COUNT(*) FROM search_entries),
		(SELECT COALESCE(SUM(bytes), 0) FROM search_sessions)`).Scan(&st.Sessions, &st.Failed, &st.Entries, &st.Bytes)
	if err != nil {
		return st, fmt.Errorf("search stats: %w", err)
	}
	return st, nil
}
