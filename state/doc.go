// Package state is postern's durable state: the hash-chained audit log, the
// index of recorded sessions, the certificate revocation list, approvals and
// locks.
//
// # Store
//
// [Open] returns a [*Store] backed by SQLite (the pure-Go modernc.org/sqlite
// driver) from a URL of the form sqlite:///abs/path.db or sqlite://relative.db,
// or backed by PostgreSQL from a postgres:// URL (see below).
// The schema is applied from embedded migrations (tracked in a schema_version
// table); the database runs in WAL mode with a busy timeout so that a second
// process (for example `postern audit verify` next to a running server) can
// read while the server writes. A Store is safe for concurrent use; Close it
// when done.
//
// The method set every backend offers is the [Backend] interface. [Open]
// with a postgres:// (or postgresql://) URL returns the same *Store on
// PostgreSQL (pgx), for several replicas sharing one database. Both backends
// run the same code, the same SQL and the same embedded migrations: the SQL
// is kept portable (BIGINT, TEXT, INTEGER columns, no SQLite-only
// functions, '?' placeholders), and the PostgreSQL connection rewrites '?'
// to $n and LIKE to ILIKE (SQLite's LIKE ignores ASCII case). Transactions
// are serialised the same way on both: SQLite's BEGIN IMMEDIATE, and on
// PostgreSQL a transaction-scoped advisory lock every transaction takes
// first, so read-then-write transactions (the audit chain head, session
// replacement, approval votes, migrations) never interleave, across
// processes and replicas. A new migration must therefore stay portable;
// the one exception is what only one backend can do (the search index:
// FTS5 on SQLite, a GIN-indexed tsvector on PostgreSQL), written as a pair
// NNNN_name.sqlite.sql and NNNN_name.postgres.sql of one version, each
// applied on its backend only.
//
// # Notifications
//
// [Store.Notify] and [Store.Subscribe] carry short hints between replicas
// (for example "approval X was decided") over PostgreSQL LISTEN/NOTIFY; on
// SQLite they work within the process. Delivery is best effort: readers
// re-read the store on a hint and also poll as a fallback.
//
// # Audit chain
//
// [Store.Append] assigns each [Event] the next sequence number (1, 2, …), a
// time if it has none, the hash of the previous event (Prev; 64 zeros for the
// first event) and its own Hash. Appends are serialised: one writer at a time
// within a process (a mutex) and across processes and replicas (BEGIN
// IMMEDIATE, or the PostgreSQL advisory lock).
//
// The canonical hash of an event, which anyone can recompute, is
//
//	hex(SHA-256(json.Marshal(e))) with e.Hash = ""
//
// where e is the [Event] struct with its JSON tags, Time in UTC truncated to
// microseconds (encoding/json writes it as RFC 3339 with nanoseconds and
// trailing zeros removed), and Details a JSON object whose keys encoding/json
// sorts. Numbers inside Details are kept exactly as first written (the store
// decodes them as json.Number), so the hash does not depend on float rounding.
// [Store.Verify] recomputes every hash and prev link and reports the first
// broken sequence number.
//
// If Options.AuditFile is set, every appended event is also written to that
// file as one JSON line (the same canonical JSON, with the hash filled in).
//
// # Checkpoints and export cursors
//
// The store keeps the signed checkpoints package audit takes of the chain
// ([Tx.PutCheckpoint], [Store.Checkpoints]; the envelope is opaque here),
// whether each has reached its anchors outside the store, and one cursor and
// lease per export sink ([Store.ClaimExport], [Store.AdvanceExport]).
// [Store.ListEvents] searches the chain. [Options].MustExist opens a store
// for reading only if it exists.
//
// # Sessions
//
// Each recording has one [Session] row, written when it starts (status
// running) and replaced when it is sealed (finished, interrupted or failed,
// with the SHA-256 and size of the stored cast and SealSeq, the sequence
// number of its session.sealed audit event). Verify checks that each sealed
// row's digest equals the one in its session.sealed event; re-hashing the
// stored objects themselves is the recorder's job (recorder.VerifySessions).
//
// # Revocations
//
// [Store.Revoke] records a revoked certificate serial (and appends a
// cert.revoked audit event); [Store.IsRevoked] is asked on every
// authentication. Revoking a certificate also ends the web sessions of the
// identity it was issued to (found by its cert.issued event).
//
// # What replicas share besides
//
// Everything a replica would otherwise keep on its own disk lives here, so
// that replicas are interchangeable: [Store.Secret] creates a secret
// postern generates (the web cookie key, the SSH host key, CA keys nobody
// configured, the SAML key) once, for every replica; web UI sessions ([Store.PutWebSession],
// [Store.GetWebSession], [Store.DeleteWebSession], and
// [Store.EndWebSessions], the hook that ends an identity's sessions);
// replica heartbeats ([Store.Heartbeat], [Store.DeadReplicaSessions],
// [Store.ClaimSession]); and recording checkpoints ([Store.AppendJournal],
// [Store.Journal], [Store.TrimJournal], [Store.DeleteJournal]), from which a
// surviving replica completes a dead one's recordings.
//
// # Locks
//
// [Store.CreateLock] and [Store.RemoveLock] keep the kill switch's locks
// (an identity, a role, a target or one session), each change appended to
// the audit chain in the same transaction (lock.created, lock.removed);
// [Store.ActiveLocks] is what every replica reads to enforce them (package
// lock).
//
// # Search
//
// [Store.IndexSession] replaces a sealed recording's search entries
// ([SearchEntry]: kind, offset, text) under a claim, so that replicas never
// index one recording twice ([Store.UnindexedSessions] lists what the
// backfill still has to do; [Store.FailSearch] marks a recording that cannot
// be read). [Store.Search] answers a [SearchQuery] (words, "phrases",
// prefix*, with identity, target and time filters), newest session first:
// FTS5 (unicode61) on SQLite; on PostgreSQL a tsvector literal built in
// Go with the same word splitter ([ParseSearchQuery]; no stemming, no stop
// words), so that a query means the same on both.
//
// # Logins and provisioning
//
// A SAML login in progress ([Store.PutLoginRequest]), its end with the
// assertion it accepted ([Store.FinishLogin], which also records the
// assertion id in the replay cache, in the same write) and the one-time
// code it hands out ([Store.TakeLoginCode]) are rows here, so that the legs
// of a login may reach different replicas. SCIM-provisioned users and groups
// ([Store.PutSCIMUser], [Store.PutSCIMGroup]) and the locks deprovisioning
// made ([Store.AddSCIMLocks]) are too; each change is audited (scim.user,
// scim.group) and announced on [NotifySCIM].
//
// # Imports
//
// state imports nothing of postern.
package state

import "context"

// Backend is the method set of a state store. *Store implements it on both
// SQLite and PostgreSQL.
type Backend interface {
	// Append adds e to the audit chain and returns it with Seq, Time, Prev
	// and Hash assigned.
	Append(ctx context.Context, e Event) (Event, error)
	// Verify recomputes the audit chain and checks sealed session digests.
	Verify(ctx context.Context) (VerifyReport, error)
	// Events returns up to limit events with Seq > afterSeq, in order.
	Events(ctx context.Context, afterSeq int64, limit int) ([]Event, error)
	// PutSession inserts or replaces a session row.
	PutSession(ctx context.Context, row Session) error
	// GetSession returns the row with id, or ErrNotFound.
	GetSession(ctx context.Context, id string) (Session, error)
	// ListSessions returns the rows matching f, newest first.
	ListSessions(ctx context.Context, f SessionFilter) ([]Session, error)
	// Revoke records a revoked certificate serial.
	Revoke(ctx context.Context, serial uint64, reason, by string) error
	// IsRevoked reports whether serial has been revoked.
	IsRevoked(ctx context.Context, serial uint64) (bool, error)
	// Revocations lists every revocation, oldest first.
	Revocations(ctx context.Context) ([]Revocation, error)
	// Close releases the store.
	Close() error
}

var _ Backend = (*Store)(nil)
