package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/posternhq/postern/state"
)

// Record kinds: the "record" field of every signed record.
const (
	// RecordCheckpoint is a Checkpoint.
	RecordCheckpoint = "checkpoint"
	// RecordSeal is a SealRecord.
	RecordSeal = "seal"
)

// Checkpoint is a signed statement of the audit chain's head: the event at
// Seq has hash Hash, and Sealed session.sealed events are at or before it.
// Whoever holds a checkpoint can tell whether a copy of the chain up to Seq
// is the one that was signed.
type Checkpoint struct {
	// Record is "checkpoint".
	Record string `json:"record"`
	// Seq is the sequence number of the last event covered.
	Seq int64 `json:"seq"`
	// Hash is that event's hash.
	Hash string `json:"hash"`
	// Time is when the checkpoint was taken.
	Time time.Time `json:"time"`
	// Sealed counts the session.sealed events with seq <= Seq.
	Sealed int64 `json:"sealed"`
	// By names the replica that signed it.
	By string `json:"by,omitempty"`
}

// SealRecord is the signed digest record of a sealed recording: every
// field of the sessions index that describes the session, the digest and
// size of the stored cast, and where the cast and its metadata are stored.
// The recorder signs it when it seals a recording and keeps the envelope in
// the session.sealed audit event ("seal" in its details) and in the
// metadata JSON beside the cast. Its JSON names are those of the metadata
// JSON.
type SealRecord struct {
	// Record is "seal".
	Record string `json:"record"`
	// ID is the session id.
	ID string `json:"id"`
	// Identity is the user's or agent's username.
	Identity string `json:"identity"`
	// Issuer is the identity's issuer name.
	Issuer string `json:"issuer"`
	// IdentityKey is the identity's key, whose recording it is (replay,
	// watch, lists and search decide on it). It is left out of the JSON
	// when empty, so that records sealed before sessions had keys (whose
	// index rows have an empty key) read and compare as they were signed,
	// while a key written into such a row, or changed in a newer one,
	// differs from the signed record.
	IdentityKey string `json:"identity_key,omitempty"`
	// Role is the role that granted access.
	Role string `json:"role"`
	// Target is the target name.
	Target string `json:"target"`
	// Login is the login on the target.
	Login string `json:"login"`
	// Kind is shell, exec, subsystem, forward or command.
	Kind string `json:"kind"`
	// Command is the exec command line or subsystem.
	Command string `json:"command"`
	// Start is when the session started (UTC, microseconds).
	Start time.Time `json:"start"`
	// End is when it ended.
	End *time.Time `json:"end"`
	// Status is finished, interrupted or failed.
	Status string `json:"status"`
	// ExitStatus is the remote exit status, if one was received.
	ExitStatus *int `json:"exit_status"`
	// ExitSignal is the signal that ended the remote command, if any.
	ExitSignal string `json:"exit_signal"`
	// BytesIn counts bytes the user sent.
	BytesIn int64 `json:"bytes_in"`
	// BytesOut counts bytes sent to the user.
	BytesOut int64 `json:"bytes_out"`
	// Size is the stored cast's length.
	Size int64 `json:"size"`
	// SHA256 is the stored cast's hex digest.
	SHA256 string `json:"sha256"`
	// Object is the cast's key in the recording store.
	Object string `json:"object"`
	// Metadata is the key of the metadata JSON beside it.
	Metadata string `json:"metadata"`
	// Replica is the replica that recorded it.
	Replica string `json:"replica"`
	// Masked reports whether parts were masked.
	Masked bool `json:"masked"`
	// Format is the asciicast version, v2 or v3.
	Format string `json:"format"`
	// MetaSHA256 is the hex SHA-256 of the index row's further details
	// (terminal size, approvals, …) as canonical JSON.
	MetaSHA256 string `json:"meta_sha256"`
	// Time is when the recording was sealed.
	Time time.Time `json:"time"`
}

// SealRecordOf returns the record of the sealed index row (Record, Metadata
// and Time left empty: the sealer sets them). The index and the record
// describe the session the same way.
func SealRecordOf(row state.Session) SealRecord {
	r := SealRecord{
		Record: RecordSeal, ID: row.ID, Identity: row.Identity, Issuer: row.Issuer, IdentityKey: row.IdentityKey, Role: row.Role,
		Target: row.Target, Login: row.Login, Kind: row.Kind, Command: row.Command, Start: micros(row.Start),
		Status: row.Status, ExitStatus: row.ExitStatus, BytesIn: row.BytesIn, BytesOut: row.BytesOut,
		Size: row.Size, SHA256: row.SHA256, Object: row.Object, Replica: row.Replica, Masked: row.Masked,
		MetaSHA256: MetaDigest(row.Meta),
	}
	if row.End != nil {
		end := micros(*row.End)
		r.End = &end
	}
	r.Format, _ = row.Meta["format"].(string)
	r.ExitSignal, _ = row.Meta["exit_signal"].(string)
	return r
}

// micros is t as the state store keeps it: UTC, truncated to microseconds.
func micros(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// MetaDigest is the hex SHA-256 of meta as canonical JSON: encoded, decoded
// and encoded again, so that the digest is the same before and after a trip
// through the state store (numbers become float64, structs maps with sorted
// keys). The empty map and nil have the digest of "{}".
func MetaDigest(meta map[string]any) string {
	canon := []byte("{}")
	if len(meta) > 0 {
		b, err := json.Marshal(meta)
		if err == nil {
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				if c, err := json.Marshal(m); err == nil {
					canon = c
				}
			}
		}
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}

// Sidecar is the metadata JSON stored beside each cast (<id>.json;
// recorder.Metadata): the seal record's fields, the session's duration, the
// sequence number of the session.sealed event, the approvals taken during
// the session, and the signed seal record itself.
type Sidecar struct {
	SealRecord
	// Duration is End - Start in seconds.
	Duration float64 `json:"duration"`
	// SealSeq is the sequence number of the session.sealed event.
	SealSeq int64 `json:"seal_seq"`
	// Approvals lists approval decisions taken during the session.
	Approvals []any `json:"approvals"`
	// Seal is the signed seal record (the same envelope as in the
	// session.sealed event); absent if seals are unsigned.
	Seal *Envelope `json:"seal,omitempty"`
}

// diffRecords lists the fields in which got differs from want, as
// `field: signed "x", <label> "y"`, skipping the named JSON fields.
func diffRecords(want, got SealRecord, label string, skip ...string) []string {
	var out []string
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	t := wv.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "record" || slices.Contains(skip, name) {
			continue
		}
		w, _ := json.Marshal(wv.Field(i).Interface())
		g, _ := json.Marshal(gv.Field(i).Interface())
		if string(w) != string(g) {
			out = append(out, fmt.Sprintf("%s: signed %s, %s %s", name, clip(string(w)), label, clip(string(g))))
		}
	}
	return out
}

// clip shortens a value for a message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "…"
	}
	return s
}
