// Package pgproxy terminates the PostgreSQL wire protocol on forwards to
// tcp targets with protocol: postgres, so that every statement is audited,
// gated and its results masked before they leave the bastion.
//
// A [Proxy] serves one client connection at a time per call to
// [Proxy.Serve], with an upstream connection the caller dialed. Message
// framing is github.com/jackc/pgx/v5/pgproto3.
//
// Startup. SSLRequest and GSSENCRequest are answered 'N' (the tunnel is
// already SSH). The StartupMessage is passed on, with its user replaced by
// [Session].DatabaseUser when set. When [Session].DatabasePassword is set,
// the proxy answers the server's challenge itself (SCRAM-SHA-256, MD5 or
// cleartext) and the client only ever sees AuthenticationOk; otherwise the
// authentication exchange is relayed. A CancelRequest is passed on.
//
// Relay. From the client: Query (simple protocol; statements split on
// top-level semicolons), Parse, Bind, Execute (extended protocol), Sync and
// Terminate are parsed; everything else is relayed. From the server:
// RowDescription, DataRow, CommandComplete, EmptyQueryResponse,
// ErrorResponse and ReadyForQuery are parsed.
//
// Audit. Every statement becomes one "sql.query" audit event (statement,
// parameter types, row count, command tag, duration, error), one line of
// the JSONL query log stored beside the recording (<id>.queries.jsonl), and
// an entry of the per-connection recording (Kind "sql"), rendered like a
// psql transcript.
//
// Gating. [Rule]s are matched against each statement in order, first match
// wins: a regular expression over the normalized statement, or a class
// (sql:drop, sql:truncate, sql:alter, sql:delete-without-where,
// sql:update-without-where). A denied statement is not sent: the client
// receives ErrorResponse (SQLSTATE 42501) and ReadyForQuery and stays usable. A
// statement to approve is held until the [StatementApprover] decides.
//
// Masking. DataRow values in text format are rewritten before they reach
// the client (stream masker) and the recording (recording masker): whole
// values of columns whose names match a rule's column globs, and detector
// or pattern matches inside values. A binary-format value of a masked
// column is sent as NULL.
//
// Limits. Statements are classified by their text; a statement hidden in a
// function, a DO block or a prepared statement created before the
// connection is not seen as what it runs. COPY data is relayed unparsed and
// unmasked.
//
// # Imports
//
// pgproxy imports the bastion (it is a TargetHandler), guardrails and the
// recorder; it never imports approvals (it is given a StatementApprover),
// players or server.
package pgproxy
