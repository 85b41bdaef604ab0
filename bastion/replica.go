package bastion

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	// Written to a temporary file, then linked into place: of two processes
	// starting on one data directory, the second reads the first one's
	// complete name, never a partial file.
	tmp, err := os.CreateTemp(dataDir, replicaIDFile+".*")
	if err != nil {
		return "", fmt.Errorf("create replica id: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(id + "\n")
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", fmt.Errorf("write replica id: %w", werr)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return ReplicaID(dataDir)
	} else if err != nil {
		return "", fmt.Errorf("create replica id: %w", err)
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
