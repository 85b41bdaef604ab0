package recorder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/posternhq/postern/state"
)

// Checkpoints.
//
// A session's spool lives on the disk of the replica that records it. With
// Options.CheckpointInterval set (the server sets it when replicas share a
// PostgreSQL state store), the recorder also copies the spool into the
// state store's recording journal as it grows: every interval, the bytes
// written since the last checkpoint that the recording store does not hold
// yet (a streamed S3 upload's completed parts, which end on line
// boundaries) become one journal entry, and the entries the upload has since
// covered are deleted. So the journal holds at most about one part (5 MiB)
// per session beyond the last checkpoint's new bytes, however long the
// session.
//
// If the replica dies, another one completes the recording
// (recoverFromJournal): it takes over the unfinished upload (Resumer), adds
// the journal's bytes beyond it, repairs the tail as Recover repairs a
// crashed spool (whole lines, an "interrupted" marker) and seals it with
// status interrupted. A killed replica therefore loses at most the last
// CheckpointInterval of any session, plus the time one checkpoint takes to
// reach the state store, however small the session: a session smaller than
// one part lives entirely in the journal until it ends.
//
// One checkpoint per session runs at a time, started by the flusher
// goroutine; maxCheckpoint bounds one entry (a session writing faster than
// that per interval falls behind, which the
// postern_recording_checkpoint_lag_bytes gauge shows). Finish waits for a
// checkpoint in flight before it closes the spool, and deletes the journal
// once the recording is sealed.

// DefaultCheckpointInterval is the checkpoint interval the server uses when
// recording.checkpoint_interval is not set.
const DefaultCheckpointInterval = 2 * time.Second

// maxCheckpoint bounds the bytes of one journal entry.
const maxCheckpoint = 8 << 20

// checkpointTimeout bounds one checkpoint's state store write.
const checkpointTimeout = 30 * time.Second

// journalKey is the session's key in the journal.
func (s *Session) checkpointDue(now time.Time) bool {
	if s.r.opts.CheckpointInterval <= 0 || s.r.opts.State == nil || s.ckptStop.Load() || s.ckptBusy.Load() {
		return false
	}
	if now.Sub(time.Unix(0, s.ckptLast.Load())) < s.r.opts.CheckpointInterval {
		return false
	}
	return s.written.Load() > s.ckptEnd.Load() || s.durable() > s.ckptTrim.Load()
}

// startCheckpoint runs a checkpoint on its own goroutine (Finish waits for
// it through ckptWG).
func (s *Session) startCheckpoint(now time.Time) {
	if !s.ckptBusy.CompareAndSwap(false, true) {
		return
	}
	s.ckptLast.Store(now.UnixNano())
	s.ckptWG.Go(func() {
		defer s.ckptBusy.Store(false)
		if s.ckptStop.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
		defer cancel()
		start := time.Now()
		if err := s.checkpoint(ctx); err != nil {
			s.r.m.errors.WithLabelValues("checkpoint").Inc()
			s.log.Warn("recording checkpoint failed; the next one retries", "err", err)
			return
		}
		s.r.m.checkpoint.Observe(time.Since(start).Seconds())
	})
}

// durable is how much of the spool the recording store holds for good.
func (s *Session) durable() int64 {
	if s.up == nil {
		return 0
	}
	return s.up.Durable()
}

// checkpoint appends the spool's new bytes to the journal and trims what
// the store has taken since.
func (s *Session) checkpoint(ctx context.Context) error {
	st := s.r.opts.State
	durable := s.durable()
	from := max(s.ckptEnd.Load(), durable)
	if durable < s.ckptTrim.Load() {
		// The streamed upload started over (the store forgot it): the
		// bytes trimmed from the journal are in no part any more.
		from = durable
		s.ckptTrim.Store(durable)
	}
	to := s.written.Load()
	if to-from > maxCheckpoint {
		to = from + maxCheckpoint
	}
	s.r.m.checkpointLag.Set(float64(s.written.Load() - to))
	if to > from {
		buf := make([]byte, to-from)
		// The writer goroutine appends to the spool meanwhile; these
		// bytes are written already, and ReadAt does not move its offset.
		if _, err := s.f.ReadAt(buf, from); err != nil {
			return fmt.Errorf("read spool: %w", err)
		}
		if err := st.AppendJournal(ctx, s.id, from, buf); err != nil {
			return err
		}
		s.ckptEnd.Store(to)
	}
	if durable > s.ckptTrim.Load() {
		if err := st.TrimJournal(ctx, s.id, durable); err != nil {
			return err
		}
		s.ckptTrim.Store(durable)
	}
	return nil
}

// stopCheckpoints stops new checkpoints and waits for one in flight.
func (s *Session) stopCheckpoints() {
	s.ckptStop.Store(true)
	s.ckptWG.Wait()
}

// deleteJournal removes a sealed session's checkpoints (best effort: left
// over, they are only space).
func (r *Recorder) deleteJournal(ctx context.Context, id string) {
	if r.opts.CheckpointInterval <= 0 || r.opts.State == nil {
		return
	}
	if err := r.opts.State.DeleteJournal(ctx, id); err != nil {
		r.log.Warn("deleting recording checkpoints failed", "session", id, "err", err)
	}
}

// RecoverDead completes the recordings that replicas which stopped sending
// heartbeats before deadline left running: for each, it claims the session
// (of several replicas trying, one wins) and completes the recording from
// the recording store's unfinished upload and the journal, sealed as
// interrupted. It returns how many it completed; failures are logged,
// counted (postern_recording_errors_total{reason="recover"}) and joined in
// the error, and retried by the next call.
func (r *Recorder) RecoverDead(ctx context.Context, deadline time.Time) (int, error) {
	st := r.opts.State
	if st == nil || r.opts.Replica == "" {
		return 0, nil
	}
	rows, err := st.DeadReplicaSessions(ctx, r.opts.Replica, deadline)
	if err != nil {
		return 0, fmt.Errorf("recover: %w", err)
	}
	var errs []error
	n := 0
	for _, row := range rows {
		won, err := st.ClaimSession(ctx, row.ID, row.Replica, r.opts.Replica)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !won {
			continue // another replica took it
		}
		dead := row.Replica
		row.Replica = r.opts.Replica
		if err := r.recoverFromJournal(ctx, row); err != nil {
			r.m.errors.WithLabelValues("recover").Inc()
			r.log.Error("completing a dead replica's recording failed", "session", row.ID, "dead_replica", dead, "err", err)
			errs = append(errs, fmt.Errorf("recover %s: %w", row.ID, err))
			continue
		}
		r.log.Warn("completed the recording of a dead replica", "session", row.ID, "dead_replica", dead)
		n++
	}
	return n, errors.Join(errs...)
}

// recoverFromJournal completes and seals the recording of row, whose spool
// is on another (dead) replica's disk, from the recording store's
// unfinished upload and the journal.
func (r *Recorder) recoverFromJournal(ctx context.Context, row state.Session) error {
	st := r.opts.State
	entries, err := st.Journal(ctx, row.ID)
	if err != nil {
		return err
	}
	var resumed ResumedUpload
	var base int64
	if rs, ok := r.opts.Store.(Resumer); ok {
		resumed, err = rs.Resume(ctx, row.Object)
		switch {
		case err == nil:
			base = resumed.Size()
		case errors.Is(err, ErrNotFound):
		default:
			return err
		}
	}
	if resumed == nil && len(entries) == 0 {
		if _, err := r.opts.Store.Stat(ctx, row.Object); err == nil {
			// The recording was stored before the replica died, not yet
			// sealed: seal the stored object.
			return r.sealRecovered(ctx, row, filepath.Join(r.opts.SpoolDir, row.ID+".absent"))
		}
	}
	// What the journal holds beyond the upload, contiguous from base.
	tmp := filepath.Join(r.opts.SpoolDir, row.ID+".recover")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer os.Remove(tmp)
	defer f.Close()
	end := base
	var last time.Time
	for _, e := range entries {
		eEnd := e.Pos + int64(len(e.Data))
		if e.Pos > end {
			r.log.Warn("recording checkpoints have a gap; the recording ends before it", "session", row.ID, "at", end, "next", e.Pos)
			break
		}
		if eEnd > end {
			if _, err := f.Write(e.Data[end-e.Pos:]); err != nil {
				return fmt.Errorf("recover: %w", err)
			}
			end = eEnd
		}
		last = e.Time
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	fallback := time.Duration(0)
	if !last.IsZero() {
		fallback = max(last.Sub(row.Start), 0)
	}
	if err := repairCast(tmp, row, base > 0, fallback); err != nil {
		return err
	}
	fi, err := os.Stat(tmp)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	rf, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer rf.Close()
	if resumed != nil {
		body := func() io.ReadSeeker { return io.NewSectionReader(rf, 0, fi.Size()) }
		if err := resumed.Complete(ctx, body, fi.Size()); err != nil {
			return err
		}
	} else if err := r.opts.Store.Put(ctx, row.Object, rf, fi.Size(), ContentTypeCast); err != nil {
		return fmt.Errorf("store recovered recording: %w", err)
	}
	rf.Close()
	os.Remove(tmp)
	// tmp is gone: seal hashes the stored object.
	return r.sealRecovered(ctx, row, tmp)
}

// sealRecovered seals a recovered recording already in the store (spool
// names no file) and deletes its journal.
func (r *Recorder) sealRecovered(ctx context.Context, row state.Session, spool string) error {
	end := r.opts.Now()
	row.End = &end
	row.Status = state.StatusInterrupted
	sealed, err := r.seal(ctx, row, spool, "interrupted: the replica recording it stopped", nil, nil)
	if err != nil {
		return err
	}
	r.deleteJournal(ctx, row.ID)
	r.log.Info("recovered interrupted recording", "session", row.ID, "object", sealed.Object, "size", sealed.Size, "from", "checkpoints")
	return nil
}

// lastLineTime returns the time of the cast event on line (the first
// element of a JSON array), for v2 markers.
func lastLineTime(line []byte) (int64, bool) {
	line = bytes.TrimSpace(line)
	if len(line) < 2 || line[0] != '[' {
		return 0, false
	}
	end := bytes.IndexByte(line, ',')
	if end < 0 {
		return 0, false
	}
	us, err := parseMicros(string(bytes.TrimSpace(line[1:end])))
	return us, err == nil
}
