package state

import "time"

// Event is one audit log entry. Seq, Prev and Hash are assigned by the store
// when the event is appended: Hash is the hex SHA-256 of the event's canonical
// JSON with Hash empty, and Prev is the Hash of the event before it, which
// makes the log a chain that `postern audit verify` checks.
type Event struct {
	Seq     int64          `json:"seq"`
	Time    time.Time      `json:"time"`
	Type    string         `json:"type"`
	Actor   string         `json:"actor,omitempty"`
	Source  string         `json:"source,omitempty"`
	Target  string         `json:"target,omitempty"`
	Session string         `json:"session,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	Prev    string         `json:"prev"`
	Hash    string         `json:"hash"`
}

// Audit event types. Every user-visible decision is one of these.
const (
	EventCertIssued     = "cert.issued"
	EventCertDenied     = "cert.denied"
	EventAuthSuccess    = "auth.success"
	EventAuthFailure    = "auth.failure"
	EventAuthPenalty    = "auth.penalty"
	EventChannelOpen    = "channel.open"
	EventChannelDeny    = "channel.deny"
	EventForwardStart   = "forward.start"
	EventForwardEnd     = "forward.end"
	EventSessionStart   = "session.start"
	EventSessionEnd     = "session.end"
	EventSessionSealed  = "session.sealed"
	EventRecordingError = "recording.error"
	EventSFTP           = "sftp.op"
	EventConfigReload   = "config.reload"
	EventCertRevoked    = "cert.revoked"
	// EventAuthRenewed: an open connection runs on with a renewed
	// certificate of the same key.
	EventAuthRenewed = "auth.renewed"
)
