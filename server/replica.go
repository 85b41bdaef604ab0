package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// replicaIDFile is the file in the data directory that names this replica.
const replicaIDFile = "replica_id"

// ReplicaID returns the name of the replica that owns dataDir: the content
// of <dataDir>/replica_id, created with a random name ("r-" and 16 hex
// digits) on first use. Replicas sharing a state store record it in the
// sessions index (recorder.Options.Replica): a restarted replica recovers the
// recordings left running under its own name — their spool files live in
// the same data directory — and never touches the sessions of the others.
// The name is stable for as long as the data directory is, and unique per
// data directory, which is exactly the lifetime of the spool it guards.
func ReplicaID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, replicaIDFile)
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if !validReplicaID(id) {
			return "", fmt.Errorf("replica id in %s is malformed; remove the file to get a new one", path)
		}
		return id, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read replica id: %w", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate replica id: %w", err)
	}
	id := "r-" + hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	// Linked into place complete: of two processes starting on one data
	// directory, the second reads the first one's whole name.
	if err := atomicfile.Create(path, []byte(id+"\n"), 0o600); errors.Is(err, fs.ErrExist) {
		return ReplicaID(dataDir)
	} else if err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	return id, nil
}

func validReplicaID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// ReplicaName returns the name this replica records in the sessions index.
// With advertise set (this replica's own HTTP base URL as other replicas
// reach it, e.g. http://$(POD_IP):8080, stable for as long as the spool is)
// the name is that URL, so another replica can forward a live follow to the
// owner without any registry; otherwise it is [ReplicaID] of dataDir.
func ReplicaName(advertise, dataDir string) (string, error) {
	if advertise == "" {
		return ReplicaID(dataDir)
	}
	base, err := replicaBaseURL(advertise)
	if err != nil {
		return "", fmt.Errorf("replica address %q: want http(s)://host:port", advertise)
	}
	return base, nil
}

// replicaBaseURL parses an advertised replica name that is an http(s) base
// URL; other names (replica IDs) are an error.
func replicaBaseURL(name string) (string, error) {
	u, err := url.Parse(name)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return "", errors.New("not an http(s) base URL")
	}
	return u.Scheme + "://" + u.Host, nil
}

// forwardedHeader marks a follow request forwarded by another replica.
const forwardedHeader = "X-Postern-Forwarded"

// forwardKey is the context key of the request facts a cross-replica follow
// re-sends.
type forwardKey struct{}

type forwarded struct {
	requestURI, authorization string
}

// WithForwarding wraps the HTTP API so that a follow asked on this replica
// can be forwarded to the replica recording the session: it keeps the
// request URI and Authorization header in the request context. The client's
// own signed Authorization is what the owner checks (the signature covers
// method, request URI and time, all unchanged), so the owner authorises the
// same identity with its own roles; no replica credential exists.
func WithForwarding(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A request another replica forwarded is not forwarded again.
		if r.Method == http.MethodGet && r.URL.Query().Get("follow") != "" && r.Header.Get(forwardedHeader) == "" {
			ctx := context.WithValue(r.Context(), forwardKey{}, forwarded{
				requestURI: r.URL.RequestURI(), authorization: r.Header.Get("Authorization"),
			})
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// SessionGetter reads one row of the sessions index.
type SessionGetter interface {
	GetSession(ctx context.Context, id string) (state.Session, error)
}

// FollowAcrossReplicas returns a follow function (players.APIOptions.Follow)
// that follows a running session locally when this replica records it, and
// otherwise streams it from the replica named in the sessions index when
// that name is an http(s) base URL (see [ReplicaName]), re-sending the
// request kept by [WithForwarding]. self is this replica's name; hc carries
// the forwarded request (no overall timeout: a follow lasts as long as the
// session).
func FollowAcrossReplicas(local func(ctx context.Context, id string) (io.ReadCloser, error),
	st SessionGetter, self string, hc *http.Client) func(ctx context.Context, id string) (io.ReadCloser, error) {
	return func(ctx context.Context, id string) (io.ReadCloser, error) {
		rc, err := local(ctx, id)
		if err == nil {
			return rc, nil
		}
		fw, ok := ctx.Value(forwardKey{}).(forwarded)
		if !ok {
			return nil, err
		}
		row, gerr := st.GetSession(ctx, id)
		if gerr != nil || row.Status != state.StatusRunning || row.Replica == self {
			return nil, err
		}
		base, perr := replicaBaseURL(row.Replica)
		if perr != nil {
			return nil, err // the owner advertises no address
		}
		req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, base+fw.requestURI, nil)
		if rerr != nil {
			return nil, fmt.Errorf("forward follow to %s: %w", base, rerr)
		}
		if fw.authorization != "" {
			req.Header.Set("Authorization", fw.authorization)
		}
		req.Header.Set(forwardedHeader, "1")
		resp, derr := hc.Do(req)
		if derr != nil {
			return nil, fmt.Errorf("forward follow to %s: %w", base, derr)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("forward follow to %s: status %d", base, resp.StatusCode)
		}
		return resp.Body, nil
	}
}

// heartbeat is this replica's watch over the others, one goroutine for the
// service's life: every replicas.heartbeat it records that it is alive and,
// with a shared (PostgreSQL) state store, completes the recordings that
// replicas silent for replicas.dead_after left running (from their
// checkpoints: recorder.RecoverDead); now and then it forgets long-gone
// replicas and expired web sessions.
func (s *Service) heartbeat(ctx context.Context, name string, started time.Time, rc config.Replicas, shared bool) error {
	tick := time.NewTicker(rc.Heartbeat.D())
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		s.beat(ctx, name, started, rc, shared, n)
	}
}

// beat is one heartbeat (n counts them).
func (s *Service) beat(ctx context.Context, name string, started time.Time, rc config.Replicas, shared bool, n int) {
	if err := s.state.Heartbeat(ctx, name, started); err != nil {
		s.log.Warn("replica heartbeat failed", "err", err)
		return
	}
	if shared {
		deadline := time.Now().Add(-rc.DeadAfter.D())
		if done, err := s.recorder.RecoverDead(ctx, deadline); err != nil {
			s.log.Error("completing the recordings of dead replicas", "err", err)
		} else if done > 0 {
			s.log.Warn("completed the recordings of dead replicas", "count", done)
		}
	}
	if n%pruneEvery == 0 {
		if _, err := s.state.PruneWebSessions(ctx); err != nil {
			s.log.Warn("pruning expired web sessions", "err", err)
		}
		if err := s.state.PruneReplicas(ctx, time.Now().Add(-forgetReplicaAfter)); err != nil {
			s.log.Warn("pruning replicas", "err", err)
		}
	}
}

// pruneEvery is how many heartbeats apart housekeeping runs.
const pruneEvery = 150

// forgetReplicaAfter is how long a silent replica that owns no running
// session stays in the replicas table.
const forgetReplicaAfter = 24 * time.Hour
