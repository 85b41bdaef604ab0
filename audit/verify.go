package audit

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/posternhq/postern/state"
)

// Source is the evidence a Verify call reads: a chain of audit events (the
// whole chain, or a part of it from From on), the checkpoints found for it,
// the sessions index, the revocations and the stored recordings. The state
// store with its recording store is one (StoreSource); an exported bundle
// is another (OpenBundle).
type Source interface {
	// Name describes the source for the report.
	Name() string
	// From is the sequence number of the first event the source holds: 1
	// for the whole chain.
	From() int64
	// Offline reports whether the source is an exported copy: then events
	// not covered by a signed checkpoint are a problem, since nothing
	// proves they are the ones postern wrote.
	Offline() bool
	// Events returns up to limit events with Seq > after, in order.
	Events(ctx context.Context, after int64, limit int) ([]state.Event, error)
	// Checkpoints returns every checkpoint found, unverified.
	Checkpoints(ctx context.Context) ([]FoundCheckpoint, error)
	// Sessions returns the sessions index rows the source holds.
	Sessions(ctx context.Context) ([]state.Session, error)
	// Revocations returns the revocation rows.
	Revocations(ctx context.Context) ([]state.Revocation, error)
	// Open returns a stored recording or metadata object; a missing one's
	// error wraps fs.ErrNotExist.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// File is a replica's local audit file (audit.file) to check against the
// source.
type File struct {
	// Path is the file.
	Path string
	// Optional reports whether a missing file is only a note (the
	// configured file of a replica that may not have written one yet).
	Optional bool
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Keys are the trusted audit public keys; required.
	Keys *Keyring
	// Files are replicas' local audit files, each checked as a sequence of
	// chain segments against the source.
	Files []File
	// Checkpoints are further checkpoints to check the chain against
	// (collected from a log sink, say).
	Checkpoints []FoundCheckpoint
	// CheckpointInterval, if set, is how often the live deployment takes
	// checkpoints: events older than three intervals and a minute that no
	// checkpoint covers are then a problem (checkpoints were deleted, or
	// none can be taken) rather than a note.
	CheckpointInterval time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// sidecarGrace is how long after a seal its metadata JSON may still be
// missing from a live store without being a problem: the recorder stores
// it right after the seal commits.
const sidecarGrace = time.Minute

func (o VerifyOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// FileReport describes one verified audit file.
type FileReport struct {
	// Path is the file.
	Path string
	// Events is the number of events in it.
	Events int
	// Segments is the number of runs of consecutive sequence numbers.
	Segments int
	// Missing reports whether the file did not exist.
	Missing bool
}

// Report is the outcome of Verify.
type Report struct {
	// Source names what was verified.
	Source string
	// First and Last are the sequence numbers of the first and last event.
	First, Last int64
	// Events is the number of events checked.
	Events int64
	// Sealed is the number of sealed recordings checked.
	Sealed int
	// Revocations is the number of revocations checked.
	Revocations int
	// Checkpoints is the number of distinct valid checkpoints that match
	// the chain.
	Checkpoints int
	// Covered is the highest sequence number a valid checkpoint covers.
	Covered int64
	// Files reports each audit file checked.
	Files []FileReport
	// Problems lists every inconsistency found, each naming the row or
	// sequence number and what differs; empty if the evidence is intact.
	Problems []string
	// Notes are facts worth knowing that are not problems.
	Notes []string
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// sealEvent is a session.sealed event as verification needs it.
type sealEvent struct {
	seq     int64
	time    time.Time
	session string
	details map[string]any
	env     *Envelope
}

// revokedEvent is a cert.revoked event.
type revokedEvent struct {
	seq    int64
	serial string
	reason string
	actor  string
	time   time.Time
}

// chain is what the walk over the events learns.
type chain struct {
	from, last int64
	firstPrev  string
	hashes     []string // by seq-from; "" for a missing event
	seals      []sealEvent
	sealSeqs   []int64
	revoked    []revokedEvent
}

func (c *chain) hashAt(seq int64) string {
	i := seq - c.from
	if i < 0 || i >= int64(len(c.hashes)) {
		return ""
	}
	return c.hashes[i]
}

// sealsUpTo counts the seal events with from <= seq <= upTo.
func (c *chain) sealsUpTo(upTo int64) int64 {
	return int64(sort.Search(len(c.sealSeqs), func(i int) bool { return c.sealSeqs[i] > upTo }))
}

// Verify checks the evidence of src: every event's hash and link, every
// checkpoint's signature and that the chain matches it (so a rewritten
// chain, a cut tail or a deleted event is found), every sealed recording
// against its signed seal (the index row, the stored cast, the metadata
// JSON), every revocation against its event, and every audit file in opts
// against the chain. Problems go into the report; the error is for evidence
// that cannot be read at all.
func Verify(ctx context.Context, src Source, opts VerifyOptions) (*Report, error) {
	if opts.Keys == nil {
		return nil, errors.New("verify: no audit public key to check signatures with")
	}
	rep := &Report{Source: src.Name()}
	ch, err := walkChain(ctx, src, rep)
	if err != nil {
		return rep, err
	}
	rows, err := src.Sessions(ctx)
	if err != nil {
		return rep, fmt.Errorf("read sessions index: %w", err)
	}
	found, err := src.Checkpoints(ctx)
	if err != nil {
		return rep, err
	}
	checkCheckpoints(ch, append(found, opts.Checkpoints...), rows, src, opts.Keys, rep)
	if err := checkStaleTail(ctx, ch, src, opts, rep); err != nil {
		return rep, err
	}
	if err := checkSessions(ctx, ch, rows, src, opts, rep); err != nil {
		return rep, err
	}
	revs, err := src.Revocations(ctx)
	if err != nil {
		return rep, fmt.Errorf("read revocations: %w", err)
	}
	checkRevocations(ch, revs, src.From() == 1, rep)
	for _, f := range opts.Files {
		fr, err := checkFile(f, ch, rep)
		if err != nil {
			return rep, err
		}
		rep.Files = append(rep.Files, fr)
	}
	return rep, nil
}

// walkChain reads every event, checking sequence, link and hash.
func walkChain(ctx context.Context, src Source, rep *Report) (*chain, error) {
	ch := &chain{from: src.From()}
	want := ch.from
	prev := ""
	after := ch.from - 1
	for {
		evs, err := src.Events(ctx, after, 1000)
		if err != nil {
			return nil, fmt.Errorf("read audit events: %w", err)
		}
		for _, e := range evs {
			rep.Events++
			switch {
			case e.Seq < want:
				rep.problem("seq %d: out of order after seq %d", e.Seq, want-1)
			case e.Seq > want && want == ch.from:
				rep.problem("seq %d: the chain starts here; events %d to %d are missing", e.Seq, want, e.Seq-1)
			case e.Seq > want:
				rep.problem("seq %d: events %d to %d are missing (deleted from the chain)", e.Seq, want, e.Seq-1)
			case want == ch.from:
				ch.firstPrev = e.Prev
				if ch.from == 1 && e.Prev != state.GenesisPrev {
					rep.problem("seq 1: prev is not the genesis value")
				}
			case e.Prev != prev:
				rep.problem("seq %d: prev does not match the hash of seq %d (an event was replaced)", e.Seq, e.Seq-1)
			}
			if h, err := state.Hash(e); err != nil || h != e.Hash {
				rep.problem("seq %d (%s): the stored hash does not match the event's contents (the event was edited)", e.Seq, e.Type)
			}
			for i := int64(len(ch.hashes)); i < e.Seq-ch.from; i++ {
				ch.hashes = append(ch.hashes, "")
			}
			if i := e.Seq - ch.from; i == int64(len(ch.hashes)) {
				ch.hashes = append(ch.hashes, e.Hash)
			}
			ch.classify(e, rep)
			prev, want, after = e.Hash, e.Seq+1, e.Seq
			ch.last = max(ch.last, e.Seq)
		}
		if len(evs) < 1000 {
			break
		}
	}
	if rep.Events > 0 {
		rep.First, rep.Last = ch.from, ch.last
	}
	return ch, nil
}

// classify notes seal and revocation events.
func (c *chain) classify(e state.Event, rep *Report) {
	switch e.Type {
	case state.EventSessionSealed:
		se := sealEvent{seq: e.Seq, time: e.Time, session: e.Session, details: e.Details}
		if raw, ok := e.Details["seal"]; ok {
			var env Envelope
			b, _ := json.Marshal(raw)
			if err := json.Unmarshal(b, &env); err != nil || env.Record == "" {
				rep.problem("seq %d (session %s): the seal in the event is malformed", e.Seq, e.Session)
			} else {
				se.env = &env
			}
		}
		c.seals = append(c.seals, se)
		c.sealSeqs = append(c.sealSeqs, e.Seq)
	case state.EventCertRevoked:
		serial, _ := e.Details["serial"].(string)
		reason, _ := e.Details["reason"].(string)
		c.revoked = append(c.revoked, revokedEvent{seq: e.Seq, serial: serial, reason: reason, actor: e.Actor, time: e.Time})
	}
}

// verifiedCheckpoint is a valid checkpoint and where it was found.
type verifiedCheckpoint struct {
	cp    Checkpoint
	where []string
}

func (v verifiedCheckpoint) describe() string {
	return fmt.Sprintf("checkpoint signed %s (%s)", v.cp.Time.Format(time.RFC3339), strings.Join(v.where, ", "))
}

// checkCheckpoints verifies every checkpoint found and compares the chain
// with it.
func checkCheckpoints(ch *chain, found []FoundCheckpoint, rows []state.Session, src Source, keys *Keyring, rep *Report) {
	bySeq := map[int64]*verifiedCheckpoint{}
	for _, fc := range found {
		if fc.Deleted != "" {
			rep.note("%s was deleted (delete marker %s); its retained versions are checked", fc.Where, fc.Deleted)
			continue
		}
		if fc.Err != "" {
			rep.problem("%s: %s", fc.Where, fc.Err)
			continue
		}
		var cp Checkpoint
		if err := keys.Open(fc.Envelope, &cp); err != nil {
			rep.problem("%s: checkpoint %s (forged or altered)", fc.Where, err)
			continue
		}
		if cp.Record != RecordCheckpoint {
			rep.problem("%s: the signed record is a %q, not a checkpoint", fc.Where, cp.Record)
			continue
		}
		v := bySeq[cp.Seq]
		switch {
		case v == nil:
			bySeq[cp.Seq] = &verifiedCheckpoint{cp: cp, where: []string{fc.Where}}
		case v.cp.Hash != cp.Hash:
			rep.problem("checkpoints disagree at seq %d: %s signs hash %.12s…, %s signs %.12s… (two different histories were signed)",
				cp.Seq, strings.Join(v.where, ", "), v.cp.Hash, fc.Where, cp.Hash)
		case !slices.Contains(v.where, fc.Where):
			v.where = append(v.where, fc.Where)
		}
	}
	seqs := make([]int64, 0, len(bySeq))
	for s := range bySeq {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })

	full := ch.from == 1
	var baseSealed int64
	haveBase := full
	lastGood := int64(0)
	rewritten := 0                 // checkpoints the chain no longer matches
	var beyond *verifiedCheckpoint // the last checkpoint past the end of the chain
	for _, seq := range seqs {
		v := bySeq[seq]
		cp := v.cp
		switch {
		case seq < ch.from-1:
			continue
		case seq == ch.from-1:
			if rep.Events > 0 && ch.firstPrev != cp.Hash {
				rep.problem("seq %d: prev does not match the %s of seq %d", ch.from, v.describe(), seq)
			}
			baseSealed, haveBase = cp.Sealed, true
			continue
		case rep.Events == 0 || seq > ch.last:
			beyond = v // the last one says most
			continue
		}
		got := ch.hashAt(seq)
		switch {
		case got == "":
			rep.problem("seq %d is missing, but a %s covers it", seq, v.describe())
			continue
		case got != cp.Hash:
			if rewritten++; rewritten > 1 {
				continue
			}
			span := fmt.Sprintf("events up to seq %d were rewritten (the chain matches no earlier checkpoint)", seq)
			if lastGood > 0 {
				span = fmt.Sprintf("events after seq %d (where the chain still matches a checkpoint) and up to seq %d were rewritten", lastGood, seq)
			}
			rep.problem("seq %d: the event's hash differs from the %s: %s", seq, v.describe(), span)
			continue
		}
		lastGood = seq
		rep.Checkpoints++
		rep.Covered = seq
		if haveBase {
			if n := baseSealed + ch.sealsUpTo(seq); n != cp.Sealed {
				rep.problem("seq %d: the %s counts %d sealed recordings up to it; the chain has %d", seq, v.describe(), cp.Sealed, n)
			}
		}
		if full {
			n := int64(0)
			for _, r := range rows {
				if r.SealSeq > 0 && r.SealSeq <= seq {
					n++
				}
			}
			if n != cp.Sealed {
				rep.problem("seq %d: the %s counts %d sealed recordings up to it; the sessions index has %d", seq, v.describe(), cp.Sealed, n)
			}
		}
	}
	if rewritten > 1 {
		rep.problem("%d later checkpoints do not match the chain either", rewritten-1)
	}
	if beyond != nil {
		rep.problem("the chain ends at seq %d, but a %s covers seq %d: %d events were cut from the tail",
			ch.last, beyond.describe(), beyond.cp.Seq, beyond.cp.Seq-ch.last)
	}
	if !haveBase && rep.Events > 0 {
		rep.problem("seq %d: no checkpoint of seq %d to tie the first event to", ch.from, ch.from-1)
	}
	switch {
	case rep.Events == 0 || beyond != nil:
	case rep.Covered == 0 && src.Offline():
		rep.problem("no signed checkpoint covers any of events %d to %d: nothing proves they are the events postern wrote", ch.from, ch.last)
	case rep.Covered == 0:
		rep.note("no signed checkpoint covers the chain yet (one is taken within audit.checkpoint_interval of activity)")
	case rep.Covered < ch.last && src.Offline():
		rep.problem("events %d to %d are not covered by a signed checkpoint: nothing proves they are the events postern wrote", rep.Covered+1, ch.last)
	case rep.Covered < ch.last:
		rep.note("%d events after seq %d are not covered by a signed checkpoint yet (the next is due within audit.checkpoint_interval)", ch.last-rep.Covered, rep.Covered)
	}
}

// checkStaleTail reports events of a live source that no checkpoint
// covers although they are older than three checkpoint intervals and a
// minute.
func checkStaleTail(ctx context.Context, ch *chain, src Source, opts VerifyOptions, rep *Report) error {
	if src.Offline() || opts.CheckpointInterval <= 0 || rep.Events == 0 || rep.Covered >= ch.last {
		return nil
	}
	evs, err := src.Events(ctx, rep.Covered, 1)
	if err != nil {
		return fmt.Errorf("read audit events: %w", err)
	}
	grace := 3*opts.CheckpointInterval + time.Minute
	if len(evs) == 1 && opts.now().Sub(evs[0].Time) > grace {
		rep.problem("events %d to %d are not covered by a signed checkpoint, the oldest from %s, although one is taken every %s: checkpoints were deleted, or none could be taken (postern_audit_checkpoints_total)",
			rep.Covered+1, ch.last, evs[0].Time.Format(time.RFC3339), opts.CheckpointInterval)
		// The note about the uncovered tail is this problem now.
		rep.Notes = slices.DeleteFunc(rep.Notes, func(n string) bool {
			return strings.Contains(n, "not covered") || strings.Contains(n, "covers the chain yet")
		})
	}
	return nil
}

// checkSessions compares every sealed recording with its signed seal.
func checkSessions(ctx context.Context, ch *chain, rows []state.Session, src Source, opts VerifyOptions, rep *Report) error {
	byID := make(map[string]state.Session, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	sealedAt := map[string][]int64{}
	for _, se := range ch.seals {
		sealedAt[se.session] = append(sealedAt[se.session], se.seq)
	}
	matched := map[string]bool{}
	for _, se := range ch.seals {
		rep.Sealed++
		if seqs := sealedAt[se.session]; len(seqs) > 1 && seqs[len(seqs)-1] != se.seq {
			rep.problem("session %s: sealed more than once (seq %d and seq %d)", se.session, se.seq, seqs[len(seqs)-1])
			continue
		}
		matched[se.session] = true
		if err := checkSeal(ctx, se, byID, src, opts, rep); err != nil {
			return err
		}
	}
	full := ch.from == 1
	for _, r := range rows {
		if matched[r.ID] {
			continue
		}
		switch {
		case r.SealSeq > 0 && r.SealSeq >= ch.from && r.SealSeq <= ch.last:
			rep.problem("session %s: the index says it was sealed at seq %d, but seq %d is not its session.sealed event", r.ID, r.SealSeq, r.SealSeq)
		case r.SealSeq > ch.last && rep.Events > 0:
			rep.problem("session %s: the index says it was sealed at seq %d, beyond the end of the chain (seq %d)", r.ID, r.SealSeq, ch.last)
		case r.SealSeq == 0 && r.Status != state.StatusRunning && full:
			rep.problem("session %s: %s in the index, but no session.sealed event seals it", r.ID, r.Status)
		}
	}
	return nil
}

// checkSeal checks one seal event: its signature, the index row, the cast
// and the metadata JSON.
func checkSeal(ctx context.Context, se sealEvent, byID map[string]state.Session, src Source, opts VerifyOptions, rep *Report) error {
	keys := opts.Keys
	id, seq := se.session, se.seq
	var rec SealRecord
	signed := false
	switch {
	case se.env == nil:
		rep.problem("session %s (seq %d): the seal is not signed", id, seq)
	default:
		if err := keys.Open(*se.env, &rec); err != nil {
			rep.problem("session %s (seq %d): the signed seal %s", id, seq, err)
		} else if rec.Record != RecordSeal || rec.ID != id {
			rep.problem("session %s (seq %d): the signed seal is for %s %q", id, seq, rec.Record, rec.ID)
		} else {
			signed = true
		}
	}
	if !signed {
		// Without a signed record, check what the event itself says.
		rec = SealRecord{ID: id}
		rec.SHA256, _ = se.details["sha256"].(string)
		rec.Object, _ = se.details["object"].(string)
		if n, ok := se.details["size"].(json.Number); ok {
			rec.Size, _ = n.Int64()
		}
	} else if d, _ := se.details["sha256"].(string); d != rec.SHA256 {
		rep.problem("session %s (seq %d): the event's sha256 differs from its signed seal", id, seq)
	}
	row, ok := byID[id]
	switch {
	case !ok:
		rep.problem("session %s (sealed at seq %d): the index row is missing", id, seq)
	case row.SealSeq != seq:
		rep.problem("session %s: seal_seq is %d in the index, but the session was sealed at seq %d", id, row.SealSeq, seq)
	}
	if ok && signed {
		if d := diffRecords(rec, SealRecordOf(row), "index", "metadata", "time"); len(d) > 0 {
			rep.problem("session %s: the index row differs from the signed seal (seq %d): %s", id, seq, strings.Join(d, "; "))
		}
	} else if ok && row.SHA256 != rec.SHA256 {
		rep.problem("session %s: the index digest differs from the seal event (seq %d)", id, seq)
	}
	if rec.Object == "" {
		rep.problem("session %s (seq %d): the seal names no recording", id, seq)
		return nil
	}
	size, sum, err := digestObject(ctx, src, rec.Object)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.problem("session %s: recording %s is missing", id, rec.Object)
	case err != nil:
		return fmt.Errorf("read recording %s: %w", rec.Object, err)
	case sum != rec.SHA256 || size != rec.Size:
		rep.problem("session %s: recording %s differs from its sealed digest: sha256 sealed %.16s…, stored %.16s…; size sealed %d, stored %d",
			id, rec.Object, rec.SHA256, sum, rec.Size, size)
	}
	if signed {
		return checkSidecar(ctx, se, rec, row, ok, src, opts, rep)
	}
	return nil
}

// checkSidecar compares the metadata JSON beside a cast with the signed
// seal.
func checkSidecar(ctx context.Context, se sealEvent, rec SealRecord, row state.Session, haveRow bool, src Source, opts VerifyOptions, rep *Report) error {
	id := se.session
	rc, err := src.Open(ctx, rec.Metadata)
	if errors.Is(err, fs.ErrNotExist) {
		if !src.Offline() && opts.now().Sub(se.time) < sidecarGrace {
			// The recorder writes the metadata right after the seal commits.
			rep.note("session %s: metadata %s is not stored yet (sealed %s ago)", id, rec.Metadata, opts.now().Sub(se.time).Round(time.Millisecond))
			return nil
		}
		rep.problem("session %s: metadata %s is missing", id, rec.Metadata)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read metadata %s: %w", rec.Metadata, err)
	}
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	rc.Close()
	if err != nil {
		return fmt.Errorf("read metadata %s: %w", rec.Metadata, err)
	}
	var sc Sidecar
	if err := json.Unmarshal(b, &sc); err != nil {
		rep.problem("session %s: metadata %s is not valid JSON", id, rec.Metadata)
		return nil
	}
	if sc.Start.IsZero() {
		rep.problem("session %s: metadata %s has no start time", id, rec.Metadata)
	}
	sc.Start = micros(sc.Start)
	if sc.End != nil {
		end := micros(*sc.End)
		sc.End = &end
	}
	var diffs []string
	diffs = append(diffs, diffRecords(rec, sc.SealRecord, "metadata")...)
	if sc.SealSeq != se.seq {
		diffs = append(diffs, fmt.Sprintf("seal_seq: sealed at %d, metadata %d", se.seq, sc.SealSeq))
	}
	if sc.Seal == nil || *sc.Seal != *se.env {
		diffs = append(diffs, "seal: the metadata does not carry the signed seal of the audit event")
	}
	if haveRow {
		want, _ := json.Marshal(row.Meta["approvals"])
		got, _ := json.Marshal(sc.Approvals)
		if string(want) == "null" {
			want = []byte("[]")
		}
		if string(got) == "null" {
			got = []byte("[]")
		}
		if string(want) != string(got) {
			diffs = append(diffs, fmt.Sprintf("approvals: index %s, metadata %s", clip(string(want)), clip(string(got))))
		}
	}
	if len(diffs) > 0 {
		rep.problem("session %s: metadata %s differs from the signed seal (seq %d): %s", id, rec.Metadata, se.seq, strings.Join(diffs, "; "))
	}
	return nil
}

// digestObject returns the size and hex SHA-256 of a stored object.
func digestObject(ctx context.Context, src Source, key string) (int64, string, error) {
	rc, err := src.Open(ctx, key)
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// checkRevocations compares the revocations table with the cert.revoked
// events. Rows without an event are only looked for in a whole chain.
func checkRevocations(ch *chain, revs []state.Revocation, full bool, rep *Report) {
	bySerial := map[string]state.Revocation{}
	for _, r := range revs {
		bySerial[fmt.Sprint(r.Serial)] = r
	}
	seen := map[string]bool{}
	for _, e := range ch.revoked {
		rep.Revocations++
		seen[e.serial] = true
		r, ok := bySerial[e.serial]
		if !ok {
			rep.problem("revocation of certificate serial %s (seq %d) is missing from the revocations table", e.serial, e.seq)
			continue
		}
		var d []string
		if r.Reason != e.reason {
			d = append(d, fmt.Sprintf("reason: event %q, table %q", e.reason, r.Reason))
		}
		if r.By != e.actor {
			d = append(d, fmt.Sprintf("by: event %q, table %q", e.actor, r.By))
		}
		if !r.Time.Equal(micros(e.time)) {
			d = append(d, fmt.Sprintf("time: event %s, table %s", micros(e.time).Format(time.RFC3339Nano), r.Time.Format(time.RFC3339Nano)))
		}
		if len(d) > 0 {
			rep.problem("revocation of certificate serial %s differs from its event (seq %d): %s", e.serial, e.seq, strings.Join(d, "; "))
		}
	}
	if !full {
		return
	}
	for _, r := range revs {
		if s := fmt.Sprint(r.Serial); !seen[s] {
			rep.problem("revocation of certificate serial %s has no cert.revoked event", s)
		}
	}
}

// checkFile checks a replica's local audit file: every line is an event
// whose hash is right; consecutive sequence numbers chain; every line is
// the very event the source holds at its sequence number (a gap is where
// other replicas wrote, and starts a new segment). Consecutive lines with
// the same problem are reported once, as a range.
func checkFile(f File, ch *chain, rep *Report) (FileReport, error) {
	fr := FileReport{Path: f.Path}
	fh, err := os.Open(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		fr.Missing = true
		if f.Optional {
			rep.note("audit file %s does not exist (this replica has written no event)", f.Path)
		} else {
			rep.problem("audit file %s does not exist", f.Path)
		}
		return fr, nil
	}
	if err != nil {
		return fr, fmt.Errorf("open audit file: %w", err)
	}
	defer fh.Close()
	runs := &fileRuns{path: f.Path, rep: rep}
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 16<<20)
	var prev state.Event
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var e state.Event
		if err := jsonUnmarshal([]byte(text), &e); err != nil || e.Seq <= 0 {
			runs.add(line, 0, "not an audit event")
			continue
		}
		fr.Events++
		if h, err := state.Hash(e); err != nil || h != e.Hash {
			runs.add(line, e.Seq, "the hash does not match the event's contents (the line was edited)")
		}
		switch {
		case fr.Events == 1 || e.Seq > prev.Seq+1:
			fr.Segments++
			if want := ch.hashAt(e.Seq - 1); e.Seq-1 >= ch.from && want != "" && e.Prev != want {
				runs.add(line, e.Seq, fmt.Sprintf("prev does not match the chain's event %d", e.Seq-1))
			}
		case e.Seq <= prev.Seq:
			runs.add(line, e.Seq, fmt.Sprintf("sequence goes back from %d", prev.Seq))
		case e.Prev != prev.Hash:
			runs.add(line, e.Seq, "prev does not match the line before")
		}
		prev = e
		switch got := ch.hashAt(e.Seq); {
		case e.Seq < ch.from:
		case e.Seq > ch.last:
			runs.add(line, e.Seq, fmt.Sprintf("beyond the end of the chain (seq %d): these events were cut from its tail", ch.last))
		case got == "":
			runs.add(line, e.Seq, "missing from the chain (deleted)")
		case got != e.Hash:
			runs.add(line, e.Seq, "differs from the chain's event of the same seq (one of them was rewritten)")
		}
	}
	runs.flush()
	if err := sc.Err(); err != nil {
		return fr, fmt.Errorf("read audit file %s: %w", f.Path, err)
	}
	return fr, nil
}

// fileRuns gathers the problems of consecutive lines of an audit file into
// one problem per run.
type fileRuns struct {
	path         string
	rep          *Report
	what         string
	line0, line1 int
	seq0, seq1   int64
}

func (r *fileRuns) add(line int, seq int64, what string) {
	if r.what == what && line <= r.line1+1 {
		r.line1, r.seq1 = line, seq
		return
	}
	r.flush()
	r.what, r.line0, r.line1, r.seq0, r.seq1 = what, line, line, seq, seq
}

func (r *fileRuns) flush() {
	switch {
	case r.what == "":
		return
	case r.line0 == r.line1:
		r.rep.problem("audit file %s line %d (seq %d): %s", r.path, r.line0, r.seq0, r.what)
	default:
		r.rep.problem("audit file %s lines %d to %d (seq %d to %d): %s", r.path, r.line0, r.line1, r.seq0, r.seq1, r.what)
	}
	r.what = ""
}
