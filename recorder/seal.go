package recorder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/state"
)

// Metadata is the sidecar JSON stored beside each cast (<id>.json): who
// recorded what, the digest and the audit sequence number that seal it, and
// the signed seal record (see package audit, which reads it back).
type Metadata = audit.Sidecar

// seal stores the spool file as row.Object, commits session.end,
// session.sealed, the final index row and then extra (the caller's own
// events, see Result.Events) in one state write, stores the metadata JSON
// and removes the spool. If the spool is gone but the object is already
// stored (a crash after the upload), the stored object is hashed instead.
func (r *Recorder) seal(ctx context.Context, row state.Session, spoolPath, errText string, digest *spoolDigest, extra []state.Event) (*Sealed, error) {
	if st := r.opts.State; st != nil {
		// Another replica may have completed this recording from its
		// checkpoints while this one could not reach the state store (it
		// was taken for dead): then this one must not store over it.
		if cur, err := st.GetSession(ctx, row.ID); err == nil && !owns(cur, row) {
			if digest != nil && digest.up != nil {
				_ = digest.up.Abort(ctx)
			}
			return nil, fmt.Errorf("seal %s: %w", row.ID, errNotOwner(cur))
		}
	}
	var size int64
	var sum string
	var err error
	moved := false // the spool file itself became the object
	if digest != nil {
		size, sum = digest.size, digest.sum
		moved, err = r.store(ctx, row.Object, spoolPath, digest)
	} else {
		size, sum, err = r.upload(ctx, row.Object, spoolPath)
	}
	if err != nil {
		r.m.errors.WithLabelValues("store").Inc()
		return nil, &castStoreError{err}
	}
	row.Size, row.SHA256 = size, sum
	sealed := &Sealed{ID: row.ID, Object: row.Object, MetaObject: MetaKey(row.Object), Size: size, SHA256: sum, Status: row.Status}

	rec := audit.SealRecordOf(row)
	rec.Metadata, rec.Time = sealed.MetaObject, r.opts.Now().UTC().Truncate(time.Microsecond)
	var seal *audit.Envelope
	if r.opts.Signer != nil {
		env, err := audit.Sign(r.opts.Signer, rec)
		if err != nil {
			return nil, fmt.Errorf("sign seal: %w", err)
		}
		seal = &env
	}

	if st := r.opts.State; st != nil {
		details := map[string]any{"status": row.Status, "bytes_in": row.BytesIn, "bytes_out": row.BytesOut}
		if row.ExitStatus != nil {
			details["exit_status"] = *row.ExitStatus
		}
		if sig, _ := row.Meta["exit_signal"].(string); sig != "" {
			details["exit_signal"] = sig
		}
		if errText != "" {
			details["error"] = errText
		}
		// session.end, session.sealed and the sealed index row commit
		// together: a sealed row always has its seal event.
		err := st.Write(ctx, func(tx *state.Tx) error {
			if cur, err := tx.GetSession(row.ID); err == nil && !owns(cur, row) {
				return errNotOwner(cur)
			}
			if _, err := tx.Append(state.Event{Type: state.EventSessionEnd, Actor: row.Identity, Target: row.Target, Session: row.ID, Details: details}); err != nil {
				return fmt.Errorf("audit session end: %w", err)
			}
			sd := map[string]any{"sha256": sum, "object": row.Object, "size": size}
			if seal != nil {
				sd["seal"] = seal
			}
			ev, err := tx.Append(state.Event{Type: state.EventSessionSealed, Actor: row.Identity, Target: row.Target, Session: row.ID,
				Details: sd})
			if err != nil {
				return fmt.Errorf("audit session seal: %w", err)
			}
			row.SealSeq = ev.Seq
			if err := tx.PutSession(row); err != nil {
				return fmt.Errorf("index sealed session: %w", err)
			}
			for _, e := range extra {
				if _, err := tx.Append(e); err != nil {
					return fmt.Errorf("audit %s: %w", e.Type, err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sealed.SealSeq = row.SealSeq
	}

	md := Metadata{SealRecord: rec, SealSeq: row.SealSeq, Approvals: []any{}, Seal: seal}
	if a, ok := row.Meta["approvals"].([]any); ok {
		md.Approvals = a
	}
	if rec.End != nil {
		md.Duration = rec.End.Sub(rec.Start).Seconds()
	}
	mdJSON, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	mdJSON = append(mdJSON, '\n')
	if err := r.opts.Store.Put(ctx, sealed.MetaObject, bytes.NewReader(mdJSON), int64(len(mdJSON)), ContentTypeJSON); err != nil {
		// The recording is sealed (the index and the audit chain hold
		// everything the metadata says); the object is a convenience for
		// readers of the store, so its loss is reported, not fatal.
		r.m.errors.WithLabelValues("store").Inc()
		r.log.Error("storing recording metadata failed", "session", row.ID, "object", sealed.MetaObject, "err", err)
	}
	if !moved {
		if err := os.Remove(spoolPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("remove spool file failed", "session", row.ID, "err", err)
		}
	}
	if r.opts.Sealed != nil {
		r.opts.Sealed(row.ID)
	}
	return sealed, nil
}

// owns reports whether the sealing replica (row.Replica) still owns the
// running session as the index has it now (cur).
func owns(cur, row state.Session) bool {
	return cur.Replica == row.Replica && cur.Status == state.StatusRunning
}

// errNotOwner says why a recording is not sealed here.
func errNotOwner(cur state.Session) error {
	if cur.Status != state.StatusRunning {
		return fmt.Errorf("the recording was sealed already (%s), by replica %q", cur.Status, cur.Replica)
	}
	return fmt.Errorf("replica %q completes the recording now", cur.Replica)
}

// castStoreError is a failure to store the cast itself: nothing of the
// seal (audit events, metadata, index) has happened yet, so it can be
// retried whole.
type castStoreError struct{ err error }

func (e *castStoreError) Error() string { return e.err.Error() }
func (e *castStoreError) Unwrap() error { return e.err }

// sealLater keeps trying to seal a recording whose cast could not be
// stored before its Finish context ended (a storage outage), until it
// succeeds or Close is called; the spool stays until then, and Recover
// seals it after a restart.
func (r *Recorder) sealLater(row state.Session, spoolPath, errText string, d *spoolDigest) {
	r.pending.Add(1)
	go func() { // waited for by Close
		defer r.pending.Done()
		sealed, err := r.seal(r.bg, row, spoolPath, errText, d, nil)
		if err != nil {
			r.log.Error("sealing recording after the storage outage failed: the next start recovers it", "session", row.ID, "err", err)
			return
		}
		if ss, ok := r.opts.Store.(StreamingStore); ok {
			// The upload abandoned at Finish may not have been aborted.
			if err := ss.AbortUploads(r.bg, row.Object); err != nil {
				r.log.Warn("aborting stale uploads failed", "session", row.ID, "err", err)
			}
		}
		r.log.Info("recording sealed after the storage outage", "session", row.ID, "object", sealed.Object, "size", sealed.Size)
	}()
}

// spoolDigest is the size and SHA-256 of a spool file, computed while it was
// written.
type spoolDigest struct {
	size int64
	sum  string
	up   Upload // the upload streaming the spool, if the store streams
}

// fileAdopter is implemented by stores that can take a local file by
// renaming it into place (FileStore on the same file system).
type fileAdopter interface {
	Adopt(ctx context.Context, key, path string) error
}

// store moves, copies or finishes streaming a spool file whose digest is
// already known into the store under key. It reports whether the spool
// file was moved into the store (so there is none left to remove).
func (r *Recorder) store(ctx context.Context, key, spoolPath string, d *spoolDigest) (moved bool, _ error) {
	size := d.size
	if d.up != nil {
		if err := d.up.Complete(ctx, size); err != nil {
			return false, fmt.Errorf("store recording: %w", err)
		}
		return false, nil
	}
	if a, ok := r.opts.Store.(fileAdopter); ok {
		err := a.Adopt(ctx, key, spoolPath)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, errCrossDevice) {
			return false, fmt.Errorf("store recording: %w", err)
		}
	}
	f, err := os.Open(spoolPath)
	if err != nil {
		return false, fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	if err := r.opts.Store.Put(ctx, key, f, size, ContentTypeCast); err != nil {
		return false, fmt.Errorf("store recording: %w", err)
	}
	return false, nil
}

// upload puts the spool file under key, hashing it on the way, and returns
// its size and digest. Without a spool file it hashes the stored object.
func (r *Recorder) upload(ctx context.Context, key, spoolPath string) (int64, string, error) {
	h := sha256.New()
	f, err := os.Open(spoolPath)
	if errors.Is(err, fs.ErrNotExist) {
		rc, err := r.opts.Store.Open(ctx, key)
		if err != nil {
			return 0, "", fmt.Errorf("recording %s: no spool file and no stored object: %w", key, err)
		}
		defer rc.Close()
		n, err := io.Copy(h, rc)
		if err != nil {
			return 0, "", fmt.Errorf("hash stored %s: %w", key, err)
		}
		return n, hex.EncodeToString(h.Sum(nil)), nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, "", fmt.Errorf("stat spool: %w", err)
	}
	if err := r.opts.Store.Put(ctx, key, io.TeeReader(f, h), fi.Size(), ContentTypeCast); err != nil {
		return 0, "", fmt.Errorf("store recording: %w", err)
	}
	return fi.Size(), hex.EncodeToString(h.Sum(nil)), nil
}

// Recover seals the recordings a previous run of this replica left behind:
// every index row still marked running for Options.Replica (and not being
// recorded now). Each spool is truncated to its last complete line, gets an
// "o" event if it had none and an "interrupted" marker, and is stored and
// sealed with status interrupted. It returns how many sessions it sealed;
// sessions it could not recover are logged, counted in
// postern_recording_errors_total{reason="recover"} and joined in the error.
func (r *Recorder) Recover(ctx context.Context) (int, error) {
	st := r.opts.State
	if st == nil {
		return 0, nil
	}
	rows, err := st.ListSessions(ctx, state.SessionFilter{Status: state.StatusRunning})
	if err != nil {
		return 0, fmt.Errorf("recover: %w", err)
	}
	var errs []error
	n := 0
	for _, row := range rows {
		if row.Replica != r.opts.Replica || r.lookup(row.ID) != nil {
			continue
		}
		if err := r.recoverOne(ctx, row); err != nil {
			r.m.errors.WithLabelValues("recover").Inc()
			r.log.Error("recover recording failed", "session", row.ID, "err", err)
			errs = append(errs, fmt.Errorf("recover %s: %w", row.ID, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (r *Recorder) recoverOne(ctx context.Context, row state.Session) error {
	spool := filepath.Join(r.opts.SpoolDir, row.ID+".cast")
	if _, err := os.Stat(spool); errors.Is(err, fs.ErrNotExist) && r.opts.CheckpointInterval > 0 {
		// This replica's disk did not survive (a new pod under the same
		// name): the checkpoints have the recording.
		return r.recoverFromJournal(ctx, row)
	}
	if ss, ok := r.opts.Store.(StreamingStore); ok {
		// The crashed run's upload cannot be trusted to match the repaired
		// spool: abort it, and store the spool anew below.
		if err := ss.AbortUploads(ctx, row.Object); err != nil {
			r.log.Warn("aborting stale uploads failed", "session", row.ID, "err", err)
		}
	}
	if _, err := os.Stat(spool); err == nil {
		if err := repairSpool(spool, row); err != nil {
			return err
		}
	}
	end := r.opts.Now()
	row.End = &end
	row.Status = state.StatusInterrupted
	sealed, err := r.seal(ctx, row, spool, "interrupted: the server stopped while recording", nil, nil)
	if err != nil {
		return err
	}
	r.deleteJournal(ctx, row.ID)
	r.log.Info("recovered interrupted recording", "session", row.ID, "object", sealed.Object, "size", sealed.Size)
	return nil
}

// repairSpool truncates a crashed spool to its last complete line, rebuilds
// a torn header from the index row, and appends an "o" event (if there were
// none) and an "interrupted" marker.
func repairSpool(path string, row state.Session) error { return repairCast(path, row, false, 0) }

// repairCast repairs a crashed recording in the file at path: the whole
// cast, or with tail its end (what follows the parts of an upload, which
// hold the header and end on a line boundary). The file is cut after its
// last complete line; a whole cast whose header did not survive gets it
// again from the index row, and one without events an empty "o" event; an
// "interrupted" marker ends it, in v2 at the time of the last event (or
// fallback, for a tail without one).
func repairCast(path string, row state.Session, tail bool, fallback time.Duration) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat spool: %w", err)
	}
	lastNL, err := lastNewline(f, fi.Size())
	if err != nil {
		return err
	}
	version := 2
	if fmtName, _ := row.Meta["format"].(string); fmtName == "v3" {
		version = 3
	}
	enc, _ := NewEncoder(version)
	var out []byte
	events := false
	switch {
	case tail:
		// The parts before this tail hold the header and events.
		events = true
		enc.last = int64(fallback / time.Microsecond)
		if lastNL >= 0 {
			prev, err := lastNewline(f, lastNL)
			if err != nil {
				return err
			}
			line := make([]byte, lastNL-prev-1)
			if _, err := f.ReadAt(line, prev+1); err != nil {
				return fmt.Errorf("read spool: %w", err)
			}
			if us, ok := lastLineTime(line); ok && version == 2 {
				enc.last = us
			}
		}
	case lastNL < 0:
		// Not even the header survived: write it again from the index row.
		w, _ := row.Meta["width"].(float64)
		h, _ := row.Meta["height"].(float64)
		term, _ := row.Meta["term"].(string)
		if w <= 0 || h <= 0 {
			w, h = 80, 24
		}
		out, err = enc.AppendHeader(nil, Header{Width: int(w), Height: int(h), Timestamp: row.Start.Unix(), Term: term, Command: row.Command})
		if err != nil {
			return err
		}
	default:
		hdrEnd, lastLine, err := headerEndAndLastLine(f, lastNL)
		if err != nil {
			return err
		}
		events = hdrEnd < lastNL
		if events && version == 2 {
			// v2 times are absolute: the marker goes at the last event's time.
			var ev []json.RawMessage
			var num json.Number
			if json.Unmarshal(lastLine, &ev) == nil && len(ev) == 3 && json.Unmarshal(ev[0], &num) == nil {
				if us, err := parseMicros(num.String()); err == nil {
					enc.last = us
				}
			}
		}
	}
	if err := f.Truncate(lastNL + 1); err != nil {
		return fmt.Errorf("truncate spool: %w", err)
	}
	if !events {
		out = append(enc.appendPrefix(out, 0, CodeOutput), '"', ']', '\n')
	}
	out = enc.AppendMarker(out, 0, "interrupted")
	if _, err := f.WriteAt(out, lastNL+1); err != nil {
		return fmt.Errorf("repair spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	return nil
}

// truncateTorn cuts a spool file after its last complete line.
func truncateTorn(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat spool: %w", err)
	}
	last, err := lastNewline(f, fi.Size())
	if err != nil {
		return err
	}
	if last+1 == fi.Size() {
		return nil
	}
	if err := f.Truncate(last + 1); err != nil {
		return fmt.Errorf("truncate spool: %w", err)
	}
	return f.Sync()
}

// lastNewline returns the offset of the last '\n' in the first size bytes
// of f, or -1.
func lastNewline(f *os.File, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read spool: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i), nil
		}
		end = start
	}
	return -1, nil
}

// headerEndAndLastLine returns the offset of the header's '\n' and the last
// complete line (the one ending at lastNL), nil if the header is the only one.
func headerEndAndLastLine(f *os.File, lastNL int64) (int64, []byte, error) {
	hdrEnd, err := firstNewline(f, lastNL+1)
	if err != nil {
		return 0, nil, err
	}
	if hdrEnd >= lastNL {
		return hdrEnd, nil, nil
	}
	prev, err := lastNewline(f, lastNL)
	if err != nil {
		return 0, nil, err
	}
	line := make([]byte, lastNL-prev-1)
	if _, err := f.ReadAt(line, prev+1); err != nil {
		return 0, nil, fmt.Errorf("read spool: %w", err)
	}
	return hdrEnd, line, nil
}

// firstNewline returns the offset of the first '\n' in the first size bytes
// of f, or -1.
func firstNewline(f *os.File, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return off + int64(i), nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read spool: %w", err)
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	return -1, nil
}

// VerifySessions re-hashes every sealed recording in store and returns the
// ids of sessions whose stored cast is missing or does not match the digest
// in the index (which state.Store.Verify checks against the audit chain).
// The error is only for an index that cannot be read.
func VerifySessions(ctx context.Context, st *state.Store, store Store) ([]string, error) {
	rows, err := st.ListSessions(ctx, state.SessionFilter{})
	if err != nil {
		return nil, fmt.Errorf("verify recordings: %w", err)
	}
	var bad []string
	for _, row := range rows {
		if row.SealSeq == 0 {
			continue
		}
		if err := checkDigest(ctx, store, row.Object, row.SHA256, row.Size); err != nil {
			bad = append(bad, row.ID)
		}
	}
	return bad, nil
}

func checkDigest(ctx context.Context, store Store, key, want string, size int64) error {
	rc, err := store.Open(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want || n != size {
		return errors.New("digest mismatch")
	}
	return nil
}
