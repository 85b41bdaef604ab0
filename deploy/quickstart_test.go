package deploy_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/dextest"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
)

// TestComposeQuickStartNatively runs the docker compose quick-start's
// topology with binaries instead of images (images cannot be pulled here):
// Dex from tools/dex with deploy/compose/dex/config.yaml, versitygw,
// PostgreSQL, an sshd target trusting postern's target CA, and postern
// serve with deploy/compose/postern.yaml. Only what containers provide is
// substituted: addresses (free loopback ports for the fixed ones and the
// service names), paths (the volumes), the credentials of the test's own
// PostgreSQL and versitygw, and the target's login (the image's "demo"
// account is the OS user here). Then the README's walk-through: postern
// login through Dex's password form (the redirect URI the quick-start got
// wrong), ssh -J to the target, sessions ls and play, a web UI login
// through Dex, and audit verify.
func TestComposeQuickStartNatively(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, versitygw, Dex, sshd and postern")
	}
	testutil.Need(t, "ssh")
	dir := filepath.Join(root(t), "deploy/compose")
	var cf composeFile
	decodeStrict(t, readFile(t, dir, "compose.yaml"), &cf)
	bin := testutil.PosternBinary(t)
	work := t.TempDir()

	// Dex, with the quick-start's config on a free port.
	dexAddr := testutil.FreeAddr(t)
	var dexCfg map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, dir, "dex/config.yaml")), &dexCfg); err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + dexAddr + "/dex"
	dexCfg["issuer"] = issuer
	dexCfg["web"].(map[string]any)["http"] = dexAddr
	dexFile := filepath.Join(work, "dex.yaml")
	writeYAML(t, dexFile, dexCfg)
	dex := testutil.Start(t, dextest.Binary(t), []string{"serve", dexFile})
	testutil.WaitPort(t, dexAddr, 60*time.Second)
	dex.WaitLine(t, regexp.MustCompile(`listening on`), 60*time.Second)

	// PostgreSQL and versitygw stand for the postgres and versitygw
	// services; the bucket is the one s3-init creates.
	pg := pgtest.Shared(t)
	stateURL := pg.PasswordDSN(pg.NewDB(t))
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "postern-recordings")

	// postern's config from the quick-start, rewritten where compose
	// provides something.
	var pcfg map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, dir, "postern.yaml")), &pcfg); err != nil {
		t.Fatal(err)
	}
	sshAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	_, sshPort, _ := net.SplitHostPort(sshAddr)
	_, httpPort, _ := net.SplitHostPort(httpAddr)
	data := filepath.Join(work, "postern-data")
	knownHosts := filepath.Join(work, "demo-keys", "known_hosts")
	pcfg["listen"] = map[string]any{"ssh": sshAddr, "http": httpAddr}
	pcfg["public_url"] = strings.Replace(pcfg["public_url"].(string), ":8080", ":"+httpPort, 1)
	pcfg["ssh_address"] = strings.Replace(pcfg["ssh_address"].(string), ":2222", ":"+sshPort, 1)
	pcfg["data_dir"] = data
	if !strings.Contains(pcfg["state"].(string), "@postgres:5432/") {
		t.Fatalf("the quick-start's state is %q", pcfg["state"])
	}
	pcfg["state"] = stateURL
	pcfg["storage"] = strings.Replace(pcfg["storage"].(string), "http://versitygw:7070", s3.Endpoint(), 1)
	iss := pcfg["identity"].(map[string]any)["issuers"].([]any)[0].(map[string]any)
	if iss["issuer_url"] != "http://127.0.0.1:5556/dex" {
		t.Fatalf("the quick-start's issuer is %v", iss["issuer_url"])
	}
	iss["issuer_url"] = issuer
	target := pcfg["targets"].([]any)[0].(map[string]any)
	target["known_hosts"] = knownHosts
	login := sshUser(t)
	for _, r := range pcfg["roles"].([]any) {
		role := r.(map[string]any)
		if fmt.Sprint(role["logins"]) != "[demo]" {
			t.Fatalf("role %v logins %v; want [demo]", role["name"], role["logins"])
		}
		role["logins"] = []any{login}
	}
	// The target's address is known once it runs, which needs the target
	// CA postern generates on first start (compose's target waits for it
	// the same way).
	target["address"] = "127.0.0.1:1"
	cfgFile := filepath.Join(work, "postern.yaml")
	writeYAML(t, cfgFile, pcfg)
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey(), "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey(), "AWS_REGION=" + s3.Region(),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	for k, v := range cf.Services["postern"].Environment {
		if !strings.HasPrefix(k, "AWS_") {
			env = append(env, k+"="+v)
		}
	}
	srv := testutil.Start(t, bin, []string{"serve", "--config", cfgFile, "--log-format", "json"}, testutil.Env(env...))
	srv.WaitLine(t, servingLine, 60*time.Second)
	pub, err := os.ReadFile(filepath.Join(data, "ca", "target_ca.pub"))
	if err != nil {
		t.Fatalf("the target CA public key is not where the target reads it: %v", err)
	}
	caKey, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sshd := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{caKey}})
	if err := os.MkdirAll(filepath.Dir(knownHosts), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(knownHosts, []byte(sshd.KnownHostsLine(sshd.Addr())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	target["address"] = sshd.Addr()
	writeYAML(t, cfgFile, pcfg)
	srv.StopWith(syscall.SIGTERM, 30*time.Second)
	srv = testutil.Start(t, bin, []string{"serve", "--config", cfgFile, "--log-format", "json"}, testutil.Env(env...))
	srv.WaitLine(t, servingLine, 60*time.Second)
	bastion := pcfg["public_url"].(string)

	// 1. Log in (the README: alice, password "password"), through Dex's form.
	cliLogin := func(email, dir string) {
		t.Helper()
		cli := testutil.Start(t, bin, []string{"login", "--bastion", bastion, "--no-browser", "--dir", dir})
		u := cli.WaitLine(t, regexp.MustCompile(`https?://\S+/dex/auth\S*`), 30*time.Second)
		u = regexp.MustCompile(`https?://\S+/dex/auth\S*`).FindString(u)
		dexForm(t, u, email, "password")
		select {
		case <-cli.Done():
			if err := cli.Err(); err != nil {
				t.Fatalf("postern login as %s: %v\n%s", email, err, cli.Output())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("postern login did not finish:\n%s", cli.Output())
		}
	}
	profile := filepath.Join(work, "alice")
	cliLogin("alice@example.com", profile)

	// 2. ssh -J through the bastion to the target.
	host, _, _ := net.SplitHostPort(pcfg["ssh_address"].(string))
	out, err := exec.Command("ssh", "-F", filepath.Join(profile, "ssh_config"), "-o", "BatchMode=yes", "-J", host,
		login+"@target", "echo hello from the quick-start target").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello from the quick-start target") {
		t.Fatalf("ssh -J: %v\n%s\npostern:\n%s", err, out, srv.Output())
	}

	// 3. Replay: alice sees her own sessions, bob (an auditor) everyone's.
	bob := filepath.Join(work, "bob")
	cliLogin("bob@example.com", bob)
	if out, err := exec.Command(bin, "sessions", "ls", "--dir", profile).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "alice@example.com") {
		t.Errorf("alice's own sessions: %v\n%s", err, out)
	}
	var id string
	waitUntil(t, 30*time.Second, "the sealed session", func() bool {
		out, err := exec.Command(bin, "sessions", "ls", "--dir", bob).CombinedOutput()
		if m := regexp.MustCompile(`(?m)^([0-9A-Z]{26})\s.*finished`).FindStringSubmatch(string(out)); err == nil && m != nil {
			id = m[1]
			return true
		}
		return false
	})
	if out, err := exec.Command(bin, "play", "--speed", "100", "--dir", bob, id).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "hello from the quick-start target") {
		t.Errorf("postern play: %v\n%s", err, out)
	}

	// The web UI: its login goes through Dex too.
	web := webLogin(t, bastion, "bob@example.com", "password")
	if code, body := webGet(t, web, bastion+"/ui/"); code != 200 || !strings.Contains(body, id) {
		t.Errorf("web UI after login: %d", code)
	}

	// 5. The audit chain.
	verify := exec.Command(bin, "audit", "verify", "--config", cfgFile)
	verify.Env = append(os.Environ(), env...)
	if out, err := verify.CombinedOutput(); err != nil || !strings.Contains(string(out), "intact") {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// dexForm opens u (an authorization URL) and fills in Dex's login form;
// the last redirect lands on postern login's loopback callback.
func dexForm(t *testing.T, u, email, password string) {
	t.Helper()
	p, err := dextest.Browse(u, email, password, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != 200 {
		t.Fatalf("login ended on %s (%d):\n%s", p.URL, p.Status, p.Body)
	}
}
