package deploy_test

import (
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
)

// dynamicUID is a user id in systemd's DynamicUser= range (61184–65519),
// with no passwd entry, as the service gets.
const dynamicUID = 61797

// TestSystemdInstall runs deploy/systemd/install.sh into a staging root
// (DESTDIR), checks what it installed and with which modes, then runs the
// unit's ExecStartPre= and ExecStart= commands as systemd would: as an
// unprivileged dynamic user id, with the credentials the unit's
// LoadCredential= lines name copied into a private $CREDENTIALS_DIRECTORY
// owned by that id, and the state directory created for it. postern must
// start, answer, and reload (ExecReload=); a configuration readable only by
// root (how the old instructions installed it) is refused with a message
// naming the file.
func TestSystemdInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs postern")
	}
	if os.Getuid() != 0 {
		testutil.Missing(t, "runs postern as another user id, which needs root (CI runs as root)")
	}
	testutil.Need(t, "ssh-keygen", "sh", "install")
	r := root(t)
	stage := worldTempDir(t)
	install := func() {
		t.Helper()
		cmd := exec.Command("sh", filepath.Join(r, "deploy/systemd/install.sh"))
		cmd.Env = append(os.Environ(), "DESTDIR="+stage, "POSTERN_BIN="+testutil.PosternBinary(t))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
	}
	install()
	for path, want := range map[string]fs.FileMode{
		"usr/local/bin/postern":                 0o755,
		"etc/systemd/system/postern.service":    0o644,
		"etc/postern":                           0o755 | fs.ModeDir,
		"etc/postern/config.yaml":               0o644,
		"etc/postern/credentials":               0o700 | fs.ModeDir,
		"etc/postern/credentials/user_ca":       0o600,
		"etc/postern/credentials/host_ca":       0o600,
		"etc/postern/credentials/target_ca":     0o600,
		"etc/postern/credentials/target_ca.pub": 0o644,
	} {
		fi, err := os.Stat(filepath.Join(stage, path))
		if err != nil {
			t.Errorf("%s not installed: %v", path, err)
			continue
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeDir); got != want {
			t.Errorf("%s mode %v; want %v", path, got, want)
		}
	}
	// A second run keeps the configuration and the keys.
	before, _ := os.ReadFile(filepath.Join(stage, "etc/postern/credentials/user_ca"))
	install()
	if after, _ := os.ReadFile(filepath.Join(stage, "etc/postern/credentials/user_ca")); string(after) != string(before) {
		t.Error("a second install replaced the user CA key")
	}

	unit := parseUnit(t, filepath.Join(stage, "etc/systemd/system/postern.service"))
	svc := unit["Service"]
	// What systemd does at start: the credentials, copied for the dynamic
	// user (mode 0400 in a directory only it reads), and the state
	// directory (0700, its own).
	creds := filepath.Join(worldTempDir(t), "credentials")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, lc := range svc["LoadCredential"] {
		name, src, ok := strings.Cut(lc, ":")
		if !ok {
			t.Fatalf("LoadCredential=%s: want NAME:/path", lc)
		}
		b, err := os.ReadFile(filepath.Join(stage, src))
		if err != nil {
			t.Fatalf("LoadCredential=%s: the install did not create %s: %v", lc, src, err)
		}
		dst := filepath.Join(creds, name)
		if err := os.WriteFile(dst, b, 0o400); err != nil {
			t.Fatal(err)
		}
		chown(t, dst)
	}
	chown(t, creds)
	state := filepath.Join(stage, "var/lib/postern")
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil { // /var/lib as on any system
		t.Fatal(err)
	}
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	chown(t, state)
	// The unit's commands, with the staging root's paths.
	staged := func(line string, extra ...string) (string, []string) {
		f := strings.Fields(line)
		for i, a := range f {
			if strings.HasPrefix(a, "/etc/") || strings.HasPrefix(a, "/usr/") || strings.HasPrefix(a, "/var/") {
				f[i] = filepath.Join(stage, a)
			}
		}
		return f[0], append(f[1:], extra...)
	}
	asService := []testutil.Option{testutil.As(dynamicUID, dynamicUID), testutil.Env("CREDENTIALS_DIRECTORY="+creds, "HOME=/nonexistent")}

	bin, args := staged(svc["ExecStartPre"][0])
	pre := testutil.Start(t, bin, args, asService...)
	<-pre.Done()
	if err := pre.Err(); err != nil {
		t.Fatalf("ExecStartPre (postern check) as uid %d: %v\n%s", dynamicUID, err, pre.Output())
	}

	bin, args = staged(svc["ExecStart"][0], "--ssh-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-format", "json")
	srv := testutil.Start(t, bin, args, asService...)
	line := srv.WaitLine(t, servingLine, 60*time.Second)
	httpAddr := regexp.MustCompile(`"http":"([^"]+)"`).FindStringSubmatch(line)[1]
	if code, body := webGet(t, http.DefaultClient, "http://"+httpAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	// ExecReload: the check, then SIGHUP.
	bin, args = staged(svc["ExecReload"][0])
	re := testutil.Start(t, bin, args, asService...)
	<-re.Done()
	if err := re.Err(); err != nil {
		t.Fatalf("ExecReload check: %v\n%s", err, re.Output())
	}
	if !strings.HasSuffix(svc["ExecReload"][1], "-HUP $MAINPID") {
		t.Errorf("the second ExecReload %q does not send SIGHUP", svc["ExecReload"][1])
	}
	if err := srv.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	srv.WaitLine(t, regexp.MustCompile(`"msg":"configuration reloaded`), 30*time.Second)
	srv.StopWith(syscall.SIGTERM, 30*time.Second)
	if fi, err := os.Stat(filepath.Join(state, "state.db")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != dynamicUID {
		t.Errorf("the state store in the state directory: %v", err)
	}

	// The old instructions' mode: the dynamic user cannot read the file,
	// and says which.
	cfg := filepath.Join(stage, "etc/postern/config.yaml")
	if err := os.Chmod(cfg, 0o640); err != nil {
		t.Fatal(err)
	}
	bin, args = staged(svc["ExecStartPre"][0])
	pre = testutil.Start(t, bin, args, asService...)
	<-pre.Done()
	if pre.Err() == nil || !strings.Contains(pre.Output(), cfg) {
		t.Errorf("a root-only configuration: %v\n%s", pre.Err(), pre.Output())
	}
}

// worldTempDir is a temporary directory that other user ids can enter (its
// parents too), as /etc and /var are.
func worldTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func chown(t *testing.T, path string) {
	t.Helper()
	if err := os.Chown(path, dynamicUID, dynamicUID); err != nil {
		t.Fatal(err)
	}
}

// parseUnit reads a systemd unit into section → key → values.
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	sections := map[string]map[string][]string{}
	var cur string
	for line := range strings.Lines(readFile(t, path)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			cur = strings.Trim(line, "[]")
			sections[cur] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || cur == "" {
			t.Fatalf("malformed unit line %q", line)
		}
		sections[cur][k] = append(sections[cur][k], v)
	}
	return sections
}
