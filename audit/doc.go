// Package audit makes postern's audit chain evidence that a third party can
// check without trusting the operator's database: signed checkpoints of
// the chain, signed digest records of sealed recordings, anchors outside
// the state store, the continuous export, evidence bundles and the
// verifier.
//
// # Signed records
//
// The audit signing key (an ed25519 key of its own, certs.AuditKey, rotated
// like the CAs) signs two kinds of record, each carried in an [Envelope]
// that keeps the exact signed JSON text:
//
//   - a [Checkpoint]: the chain head's sequence number and hash, the time,
//     and how many recordings were sealed up to it;
//   - a [SealRecord]: everything the sessions index says about a sealed
//     recording (identity, target, times, status, sizes, …), the SHA-256
//     and size of the stored cast and where it and its metadata JSON are.
//     The recorder signs it when it seals and keeps the envelope in the
//     session.sealed event ("seal" in its details) and in the metadata
//     JSON.
//
// The signature is Ed25519 over "postern-audit-v1", a zero byte, and the
// record text; Key is the SHA256 fingerprint of the public key as
// ssh-keygen prints it. A [Keyring] holds the public keys a verifier
// trusts (`postern ca export --audit` prints them).
//
// # Checkpoints and anchors
//
// A [Checkpointer] runs on every replica: every interval, if the chain has
// grown, it signs a checkpoint of the head in a state store transaction
// (replicas share the work) and writes it to every [Anchor]: the recording
// store under audit/checkpoints/ ([StorageAnchor], S3 Object Lock applies
// when the bucket is configured for it) and the HTTP log sink
// ([HTTPSink]). Checkpoints are not events: taking one leaves the chain
// alone.
//
// # Verification
//
// [Verify] checks a [Source] — the live stores ([StoreSource]) or an
// exported bundle ([OpenBundle]) — and reports every problem with the row
// or sequence number and what differs: events whose hash or link is wrong,
// events missing, a chain that does not match a signed checkpoint (it was
// rewritten and re-hashed, or its tail was cut), sealed recordings whose
// index row, seal_seq, cast or metadata JSON differs from the signed seal,
// index rows without their seal, revocations without their event and the
// other way round, and replicas' local audit files (each a sequence of
// chain segments) that disagree with the chain.
//
// # Export
//
// An [Exporter] streams events to S3 objects (one per window, ending with a
// signed checkpoint) and to an [HTTPSink] (OpenTelemetry logs or Splunk
// HEC), with a cursor and a lease per sink in the state store, retries,
// and lag metrics. [WriteBundle] writes an evidence bundle for
// `postern audit export`; `postern audit verify --offline` verifies one.
//
// # Imports
//
// audit imports the state store and nothing else of postern above the
// foundations; it knows no SSH, no recorder (recordings are objects it
// reads through [Objects]), no certificates and no server.
package audit
