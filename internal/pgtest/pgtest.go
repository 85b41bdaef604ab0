package pgtest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/posternhq/postern/internal/testutil"
)

// The role that must authenticate with a password over TCP.
const (
	PasswordUser = "postern"
	Password     = "postern-test-password"
)

// Superuser is the trusted superuser role.
const Superuser = "postgres"

// binDirs are searched, in order, for initdb, postgres and psql.
var binDirs = []string{"/usr/lib/postgresql/15/bin"}

const (
	startTimeout = 60 * time.Second
	stopGrace    = 10 * time.Second
)

var readyLine = regexp.MustCompile(`database system is ready to accept connections`)

// Server is a running PostgreSQL server.
type Server struct {
	port int
	base string // owns data/ and sock/; removed on Stop
	bin  string
	proc *testutil.Proc
	args []string          // the postgres command line, for Restart
	opts []testutil.Option // its process options

	stopOnce sync.Once
}

// Start runs a fresh PostgreSQL server for this test and stops it when the
// test ends. It skips the test if PostgreSQL is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := launch(needBinDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log:\n%s", s.Log())
		}
		s.Stop()
	})
	return s
}

var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Shared returns the server shared by all tests of this test binary,
// starting it on first use. The test binary's TestMain must call [RunMain]
// so it is stopped at the end. Tests should work in their own database
// ([Server.NewDB]) so they can run in parallel.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := needBinDir(t)
	shared.once.Do(func() { shared.srv, shared.err = launch(bin) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// RunMain runs the tests and then stops the [Shared] server, if it was
// started. Use it as: func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m)) }.
func RunMain(m *testing.M) int {
	code := m.Run()
	// Once more: a no-op that orders this read after the start, or, if no
	// test asked for the server, keeps a straggler from starting one now.
	shared.once.Do(func() {})
	if shared.srv != nil {
		shared.srv.Stop()
	}
	return code
}

// needBinDir returns [binDir], skipping the test if PostgreSQL is not
// installed.
func needBinDir(t testing.TB) string {
	t.Helper()
	bin := binDir()
	if bin == "" {
		testutil.Need(t, "initdb", "postgres", "psql")
		t.Fatal("postgres is on PATH but initdb is not beside it; install PostgreSQL 15 (apt-get install postgresql)")
	}
	return bin
}

// binDir returns the directory holding initdb, postgres and psql, or ""
// if PostgreSQL is not installed.
func binDir() string {
	for _, d := range binDirs {
		if isExec(filepath.Join(d, "postgres")) && isExec(filepath.Join(d, "initdb")) {
			return d
		}
	}
	p, err := exec.LookPath("postgres")
	if err != nil {
		return ""
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return ""
	}
	d := filepath.Dir(p)
	if isExec(filepath.Join(d, "initdb")) {
		return d
	}
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// owner is the OS user the server runs as: "postgres" under root, else
// the current user (nil Option).
type owner struct {
	uid, gid int
	opt      testutil.Option
}

func serverOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres OS user (install the postgresql package): %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return owner{}, fmt.Errorf("postgres OS user ids: %w", err)
	}
	return owner{uid: uid, gid: gid, opt: testutil.As(uint32(uid), uint32(gid))}, nil
}

func (o owner) opts(extra ...testutil.Option) []testutil.Option {
	if o.opt != nil {
		extra = append(extra, o.opt)
	}
	return extra
}

// launch copies the template cluster, starts postgres on it and waits until
// it accepts connections.
func launch(bin string) (_ *Server, err error) {
	own, err := serverOwner()
	if err != nil {
		return nil, err
	}
	tmpl, err := template(bin, own)
	if err != nil {
		return nil, err
	}
	reclaimOnce.Do(reclaimLeaked)
	base, err := os.MkdirTemp(scratchDir(), "pgtest")
	if err != nil {
		return nil, fmt.Errorf("pgtest directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(base)
		}
	}()
	if err := os.Chown(base, own.uid, own.gid); err != nil {
		return nil, fmt.Errorf("chown pgtest directory: %w", err)
	}
	data := filepath.Join(base, "data")
	if out, err := exec.Command("cp", "-a", tmpl, data).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy template cluster: %w: %s", err, out)
	}
	sock := filepath.Join(base, "sock")
	if err := os.Mkdir(sock, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := os.Chown(sock, own.uid, own.gid); err != nil {
		return nil, fmt.Errorf("chown socket directory: %w", err)
	}

	// A port taken between picking and binding makes postgres exit; retry
	// with another port a few times.
	var lastErr error
	for range 3 {
		port, perr := testutil.PickPort()
		if perr != nil {
			return nil, perr
		}
		s := &Server{port: port, base: base, bin: bin}
		args := []string{
			"-D", data,
			"-p", strconv.Itoa(port),
			"-k", sock,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "shared_buffers=16MB",
			// Segments in the data directory go away with it, even after a kill.
			"-c", "dynamic_shared_memory_type=mmap",
			"-c", "max_connections=200",
			"-c", "logging_collector=off",
			"-c", "log_destination=stderr",
			"-c", "log_min_messages=warning",
			"-c", "log_statement=none",
		}
		s.args, s.opts = args, own.opts(testutil.Env("LC_ALL=C"))
		proc, err := testutil.Launch(filepath.Join(bin, "postgres"), s.args, s.opts...)
		if err != nil {
			return nil, err
		}
		s.proc = proc
		if _, err := proc.AwaitLine(readyLine, startTimeout); err != nil {
			proc.Stop()
			lastErr = fmt.Errorf("start postgres: %w\n%s", err, proc.Output())
			if testutil.PortInUse(proc.Output()) {
				continue
			}
			return nil, lastErr
		}
		return s, nil
	}
	return nil, lastErr
}

var reclaimOnce sync.Once

// reclaimLeaked removes cluster directories left by test binaries that died
// without cleaning up (a test timeout, a panic, a Shared server without
// RunMain). Their servers are gone (they die with the test binary), but in
// /dev/shm the files hold memory. A directory counts as leaked when its
// postmaster's PID is dead, or when it never got a postmaster and is older
// than a setup could take.
func reclaimLeaked() {
	dirs, _ := filepath.Glob(filepath.Join(scratchDir(), "pgtest*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
		if err == nil {
			pid, perr := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			if perr != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
				continue // running, or unreadable: leave it
			}
			removeSysVSegment(filepath.Join(dir, "data", "postmaster.pid"))
			os.RemoveAll(dir)
			continue
		}
		if fi, serr := os.Stat(dir); serr == nil && time.Since(fi.ModTime()) > 10*time.Minute {
			os.RemoveAll(dir)
		}
	}
}

// scratchDir is where clusters live: /dev/shm when it is there, since
// initdb and copying a cluster are bound by disk writes (a template copy
// takes seconds on disk and a tenth of that in memory); else the system
// temporary directory.
func scratchDir() string {
	const shm = "/dev/shm"
	if fi, err := os.Stat(shm); err == nil && fi.IsDir() && syscall.Access(shm, 2 /* W_OK */) == nil {
		return shm
	}
	return os.TempDir()
}

// template returns a pristine cluster directory for bin, creating it once
// per machine. Concurrent test binaries each build into a private
// directory and rename it into place; the loser of the race discards its
// copy.
func template(bin string, own owner) (string, error) {
	key, err := binaryKey(filepath.Join(bin, "postgres"))
	if err != nil {
		return "", err
	}
	root := filepath.Join(scratchDir(), fmt.Sprintf("postern-pgtest-%d-%s", own.uid, key))
	if _, err := os.Stat(filepath.Join(root, "PG_VERSION")); err == nil {
		return root, nil
	}
	work, err := os.MkdirTemp(scratchDir(), "postern-pgtest-build")
	if err != nil {
		return "", fmt.Errorf("template directory: %w", err)
	}
	defer os.RemoveAll(work)
	if err := os.Chown(work, own.uid, own.gid); err != nil {
		return "", fmt.Errorf("chown template directory: %w", err)
	}
	data := filepath.Join(work, "data")
	pwFile := filepath.Join(work, "pw")
	if err := os.WriteFile(pwFile, []byte(Password+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write password file: %w", err)
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"),
		"-D", data, "-U", Superuser, "-A", "trust", "-E", "UTF8", "--locale=C",
		"--no-sync", "--no-instructions",
		// 1 MiB WAL segments instead of 16 MiB: a smaller template to copy.
		"--wal-segsize=1")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if own.opt != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(own.uid), Gid: uint32(own.gid)}}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w\n%s", err, out)
	}
	hba := strings.Join([]string{
		"# postern test cluster",
		"local all all trust",
		"host all " + PasswordUser + " 127.0.0.1/32 scram-sha-256",
		"host all all 127.0.0.1/32 trust",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return "", fmt.Errorf("write pg_hba.conf: %w", err)
	}
	// The password role is created in single-user mode, so building the
	// template never needs a port.
	single := exec.Command(filepath.Join(bin, "postgres"), "--single", "-D", data, "-c", "fsync=off", "postgres")
	single.Stdin = strings.NewReader(fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s';\nCREATE DATABASE %s OWNER %s;\n",
		PasswordUser, Password, PasswordUser, PasswordUser))
	single.SysProcAttr = cmd.SysProcAttr
	single.Env = cmd.Env
	if out, err := single.CombinedOutput(); err != nil || strings.Contains(string(out), "ERROR") {
		return "", fmt.Errorf("create password role: %v\n%s", err, out)
	}
	if err := os.Rename(data, root); err != nil {
		if _, serr := os.Stat(filepath.Join(root, "PG_VERSION")); serr == nil {
			return root, nil // another test binary won the race
		}
		return "", fmt.Errorf("install template cluster: %w", err)
	}
	removeStaleTemplates(root)
	return root, nil
}

// removeStaleTemplates removes templates of other PostgreSQL binaries (an
// upgrade, or an older harness) that have not been touched for an hour, so
// they don't pile up in memory.
func removeStaleTemplates(keep string) {
	// keep is ".../postern-pgtest-<uid>-<key>"; siblings share the prefix.
	prefix := keep[:strings.LastIndexByte(keep, '-')+1]
	old, _ := filepath.Glob(prefix + "*")
	for _, dir := range old {
		fi, err := os.Stat(dir)
		if dir == keep || err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		os.RemoveAll(dir)
	}
}

// binaryKey identifies a postgres binary by path, size and modification
// time, so an upgraded PostgreSQL gets a new template.
func binaryKey(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("stat postgres: %w", err)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%d|v2", path, fi.Size(), fi.ModTime().UnixNano()))
	return hex.EncodeToString(h[:6]), nil
}

// Addr returns the listening address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the listening port.
func (s *Server) Port() int { return s.port }

// SocketDir returns the directory holding the server's unix socket.
func (s *Server) SocketDir() string { return filepath.Join(s.base, "sock") }

// DSN returns a URL connecting to database db as the trusted superuser
// over TCP, without TLS.
func (s *Server) DSN(db string) string {
	return s.dsn(url.User(Superuser), db)
}

// PasswordDSN returns a URL connecting to database db as [PasswordUser]
// with [Password] over TCP, without TLS.
func (s *Server) PasswordDSN(db string) string {
	return s.dsn(url.UserPassword(PasswordUser, Password), db)
}

func (s *Server) dsn(u *url.Userinfo, db string) string {
	return (&url.URL{
		Scheme:   "postgres",
		User:     u,
		Host:     s.Addr(),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}).String()
}

// Exec runs sql in database "postgres" as the superuser through psql and
// returns its output: unaligned, tuples only, fields separated by "|".
// It fails the test on any SQL error.
func (s *Server) Exec(t testing.TB, sql string) string {
	t.Helper()
	return s.ExecDB(t, "postgres", sql)
}

// ExecDB is [Server.Exec] in database db.
func (s *Server) ExecDB(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := s.Psql(db, sql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Psql runs sql in database db as the superuser and returns its output,
// or an error carrying psql's message. It is the test-free form of
// [Server.ExecDB].
func (s *Server) Psql(db, sql string) (string, error) {
	cmd := exec.Command(filepath.Join(s.bin, "psql"),
		"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "-U", Superuser, "-d", db,
		"-f", "-")
	cmd.Stdin = strings.NewReader(sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10", "PGSSLMODE=disable", "PGAPPNAME=pgtest")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSuffix(stdout.String(), "\n"), nil
}

var dbSeq atomic.Int64

// NewDB creates a database with a unique name, owned by [PasswordUser],
// and drops it when the test ends. It returns the name.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), dbSeq.Add(1))
	s.Exec(t, "CREATE DATABASE "+name+" OWNER "+PasswordUser)
	t.Cleanup(func() {
		// The server may already be gone in fault tests; nothing to drop then.
		if s.Running() {
			if _, err := s.Psql("postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				t.Logf("drop test database %s: %v", name, err)
			}
		}
	})
	return name
}

// Running reports whether the server process is still up.
func (s *Server) Running() bool {
	select {
	case <-s.proc.Done():
		return false
	default:
		return true
	}
}

// Log returns what the server has logged (warnings and errors).
func (s *Server) Log() string { return s.proc.Output() }

// Kill kills the server at once, without a shutdown checkpoint, for fault
// tests. Its data directory stays until [Server.Stop] or the test's end.
func (s *Server) Kill() { s.proc.Stop() }

// Restart starts a killed server again on the same port and data directory,
// as after a crash: PostgreSQL recovers from its write-ahead log. It waits
// until the server accepts connections.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.Running() {
		t.Fatal("pgtest: Restart of a running server; Kill it first")
	}
	removeSysVSegment(filepath.Join(s.base, "data", "postmaster.pid"))
	proc, err := testutil.Launch(filepath.Join(s.bin, "postgres"), s.args, s.opts...)
	if err != nil {
		t.Fatal(err)
	}
	s.proc = proc
	if _, err := proc.AwaitLine(readyLine, startTimeout); err != nil {
		t.Fatalf("restart postgres: %v\n%s", err, proc.Output())
	}
}

// Stop shuts the server down and removes its files. It is safe to call
// more than once. The shutdown is immediate (no checkpoint), since the data
// is thrown away; SIGKILL follows after a grace period.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.proc.StopWith(syscall.SIGQUIT, stopGrace)
		removeSysVSegment(filepath.Join(s.base, "data", "postmaster.pid"))
		os.RemoveAll(s.base)
	})
}

// removeSysVSegment removes the small System V shared memory segment a
// killed postmaster leaves behind (a clean shutdown removes it and the pid
// file). Its id is the second field of the pid file's seventh line.
func removeSysVSegment(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		return
	}
	id, err := strconv.Atoi(f[1])
	if err != nil {
		return
	}
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &ds); err != nil || ds.Nattch != 0 {
		return
	}
	_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
}
