// Package recorder records terminal sessions as asciicast files, stores them
// and seals them into the audit chain. It knows nothing about SSH: the
// bastion hands it bytes, sizes and exit statuses.
//
// # Lifecycle
//
// A [Recorder] is created once per server with [New]. [Recorder.Recover]
// runs at start-up to seal recordings a crashed run left behind. Each
// recorded session is a [Session] from [Recorder.Start]:
//
//  1. Start creates the spool file <spool>/<id>.cast, writes the cast
//     header, inserts the sessions-index row (status running) and appends a
//     session.start audit event.
//  2. [Session.Output], [Session.Input], [Session.Resize] and
//     [Session.Marker] encode events into a bounded per-session buffer; a
//     writer goroutine appends full chunks to the spool (large writes) and
//     fsyncs it every FsyncInterval. [Session.SetEcho] masks typed input at
//     password prompts.
//  3. [Session.Finish] writes the exit event, drains and fsyncs the spool,
//     stores the cast (YYYY/MM/DD/<id>.cast) and the metadata JSON
//     (<id>.json) in the [Store], appends session.end and session.sealed
//     (with the cast's SHA-256, and the seal record signed with
//     Options.Signer, see package audit) audit events and updates the
//     index row.
//
// A nil *Session records nothing, so callers need no "if recording" branches.
// While a session runs, [Recorder.Follow] tails its spool for live viewers.
//
// # Replicas
//
// With Options.CheckpointInterval set, the bytes of each spool that the
// store does not hold yet are copied into the state store's journal every
// interval (journal.go), and [Recorder.RecoverDead] completes the
// recordings of replicas that stopped sending heartbeats from the store's
// unfinished upload ([Resumer]) and the journal: a killed replica loses at
// most one interval of any session. A seal checks that this replica still
// owns the session, so a replica that was only cut off cannot store over a
// recording another one completed.
//
// # Stores
//
// [OpenStore] opens a [FileStore] (file://) or an [S3Store] (s3://, see
// package s3store). A store that is also a [StreamingStore] (S3) gets each
// spool while it is written: Start calls Begin, every spool write calls
// [Upload.Grow] (which never waits), and Finish only sends the tail and
// completes the upload. A [HealthReporter] store (S3) reports outages,
// which the recorder appends as storage.outage and storage.recovered audit
// events, and its backlog ([Recorder.StorageHealth]). Recover aborts the
// streamed uploads a crashed run left behind before storing the repaired
// spool again. A session that ends while the store is down returns
// [ErrSealPending] from Finish and is stored and sealed in the background
// when the store answers ([Recorder.Close] stops that; Recover finishes it
// after a restart). Options.MinSpoolFree makes Start refuse new recordings
// ([ErrSpoolFull]) while the spool's file system is nearly full.
//
// # Failure policy
//
// Recording never blocks the data path beyond the bounded buffer
// (Options.BufferSize). When the writer falls behind, Options.OnOverflow
// decides: "block" waits up to [BlockTimeout] and then fails the recording
// (every later call returns the error, so the caller can fail closed);
// "drop" discards data, counts it, and writes a "gap: N bytes dropped"
// marker plus a recording.error audit event when space returns.
//
// # Formats
//
// asciicast v2 (the default, read by every player) and v3; see [Encoder]
// for the encoding rules, the UTF-8 carry and the cost of binary output, and
// [Decoder] for reading casts back. Specifications:
// [asciicast v2] and [asciicast v3].
//
// # Imports
//
// recorder imports the state store, audit (to sign seal records) and
// recorder/s3store; it knows no SSH and
// no policy: it never imports the bastion, certs, policy, approvals, players
// or server.
//
// [asciicast v2]: https://docs.asciinema.org/manual/asciicast/v2/
// [asciicast v3]: https://docs.asciinema.org/manual/asciicast/v3/
package recorder
