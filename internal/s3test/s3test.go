package s3test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/posternhq/postern/internal/testutil"
)

// The root credentials and region of every test server.
const (
	accessKey = "postern-test-access"
	secretKey = "postern-test-secret-key-0123456789"
	region    = "us-east-1"
)

const (
	startTimeout = 60 * time.Second
	healthPath   = "/postern-test-health"
)

// bucketName is what S3 accepts as a bucket name (the simple form).
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// Server is a running versitygw.
type Server struct {
	bin  string
	addr string
	dir  string // posix backend root: one directory per bucket

	mu   sync.Mutex
	proc *testutil.Proc // the current process; replaced by Restart
}

// Start runs versitygw on a free 127.0.0.1 port with an empty posix root
// and returns once it answers.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		bin: Binary(t),
		dir: t.TempDir(), // on disk: the posix backend needs user xattrs
	}
	// A port taken between picking and binding makes versitygw exit; retry
	// with another port a few times.
	for attempt := 1; ; attempt++ {
		s.addr = testutil.FreeAddr(t)
		err := s.launch(t)
		if err == nil {
			break
		}
		if attempt < 3 && testutil.ExitedPortInUse(s.current()) {
			continue
		}
		s.Stop()
		t.Fatalf("start versitygw: %v\n%s", err, s.Log())
	}
	t.Cleanup(s.Stop)
	return s
}

// Binary returns the versitygw binary, building it if needed (see the
// package documentation).
func Binary(t testing.TB) string {
	t.Helper()
	return testutil.Tool(t, "POSTERN_VERSITYGW", "versitygw", "versitygw", "github.com/versity/versitygw/cmd/versitygw")
}

// launch starts versitygw on s.addr and waits until it answers its
// health check.
func (s *Server) launch(t testing.TB) error {
	t.Helper()
	p := testutil.Start(t, s.bin,
		[]string{"--port", s.addr, "--region", region, "--health", healthPath, "--quiet", "posix", s.dir},
		testutil.Env("ROOT_ACCESS_KEY="+accessKey, "ROOT_SECRET_KEY="+secretKey),
		testutil.Dir(s.dir))
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := testutil.AwaitPort(s.addr, startTimeout, p.Done()); err != nil {
		return err
	}
	// The port may answer for another process that took it: the health
	// check, at a path only versitygw serves, tells.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(s.Endpoint() + healthPath)
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check: status %d", resp.StatusCode)
	}
	return nil
}

// Endpoint returns the S3 endpoint URL, "http://127.0.0.1:PORT". Use
// path-style addressing.
func (s *Server) Endpoint() string { return "http://" + s.addr }

// Addr returns the listening address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// Port returns the listening port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// AccessKey returns the root access key ID.
func (s *Server) AccessKey() string { return accessKey }

// SecretKey returns the root secret access key.
func (s *Server) SecretKey() string { return secretKey }

// Region returns the region the server signs for, "us-east-1".
func (s *Server) Region() string { return region }

// Dir returns the posix backend root. Bucket b's object k is the file
// Dir()/b/k.
func (s *Server) Dir() string { return s.dir }

// ObjectPath returns the file holding object key in bucket.
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.dir, bucket, filepath.FromSlash(key))
}

// Log returns what the current versitygw process has logged.
func (s *Server) Log() string { return s.current().Output() }

func (s *Server) current() *testutil.Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// CreateBucket creates bucket name, owned by the root account, the way
// versitygw's posix backend stores one: a directory carrying the bucket's
// ACL and object ownership in extended attributes. It works whether the
// server is running or stopped.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	if !bucketName.MatchString(name) {
		t.Fatalf("bucket name %q is not a valid S3 bucket name", name)
	}
	dir := filepath.Join(s.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	type grantee struct {
		Permission, Access, Type string
	}
	acl, err := json.Marshal(struct {
		Owner    string
		Grantees []grantee
	}{
		Owner:    accessKey,
		Grantees: []grantee{{Permission: "FULL_CONTROL", Access: accessKey, Type: "CanonicalUser"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for attr, val := range map[string][]byte{
		"user.acl":       acl,
		"user.ownership": []byte("BucketOwnerEnforced"),
	} {
		if err := unix.Setxattr(dir, attr, val, 0); err != nil {
			t.Fatalf("create bucket %s: set %s (the filesystem must support user xattrs): %v", name, attr, err)
		}
	}
}

// Stop kills versitygw, for outage tests; the data stays. It is safe to
// call more than once.
func (s *Server) Stop() { s.current().Stop() }

// Restart starts versitygw again on the same port and data after
// [Server.Stop] (stopping it first if it runs) and waits until it answers.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.launch(t); err != nil {
		t.Fatalf("restart versitygw on %s: %v\n%s", s.addr, err, s.Log())
	}
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("versitygw %s (posix %s)", s.addr, s.dir) }

// AWSEnv points the standard AWS credential chain of this process at the
// given keys and nothing else (no shared files, no instance metadata), in
// the us-east-1 region, for the rest of the test.
func AWSEnv(t testing.TB, access, secret string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", region)
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// SetAWSEnv is AWSEnv with the server's root keys.
func (s *Server) SetAWSEnv(t testing.TB) { AWSEnv(t, accessKey, secretKey) }
