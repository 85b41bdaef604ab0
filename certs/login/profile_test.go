package login

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/testutil"
)

// testCA returns a fresh ed25519 CA signer.
func testCA(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signUser signs a user certificate for pub valid from after to before.
func signUser(t *testing.T, ca ssh.Signer, pub ssh.PublicKey, after, before time.Time, principals ...string) (*ssh.Certificate, string) {
	t.Helper()
	c := &ssh.Certificate{
		Key:             pub,
		Serial:          42,
		CertType:        ssh.UserCert,
		KeyId:           "alice@example.com",
		ValidPrincipals: principals,
		ValidAfter:      uint64(after.Unix()),
		ValidBefore:     uint64(before.Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c)))
}

func hostCALine(t *testing.T) string {
	t.Helper()
	return "@cert-authority * " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(testCA(t).PublicKey())))
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	s1, err := loadOrCreateKey(dir, "postern@bastion")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, KeyFileName)
	if got := mode(t, key); got != 0o600 {
		t.Errorf("key mode = %o; want 600", got)
	}
	b, _ := os.ReadFile(key)
	if !strings.HasPrefix(string(b), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("key is not in OpenSSH format: %.40q", b)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, PublicKeyFileName))
	if !strings.HasPrefix(string(pub), "ssh-ed25519 ") || !strings.HasSuffix(string(pub), " postern@bastion\n") {
		t.Errorf("public key file = %q; want an ssh-ed25519 line with the comment", pub)
	}
	// ssh-keygen reads the private key and derives the same public key.
	if out, err := exec.Command("ssh-keygen", "-y", "-f", key).Output(); err == nil {
		if got, want := strings.Fields(string(out))[1], strings.Fields(string(pub))[1]; got != want {
			t.Errorf("ssh-keygen -y = %s; want %s", got, want)
		}
	} else if _, lerr := exec.LookPath("ssh-keygen"); lerr == nil {
		t.Errorf("ssh-keygen -y: %v", err)
	}

	// A second call reuses the key, and restores a lost .pub.
	os.Remove(filepath.Join(dir, PublicKeyFileName))
	s2, err := loadOrCreateKey(dir, "postern@bastion")
	if err != nil {
		t.Fatal(err)
	}
	if string(s1.PublicKey().Marshal()) != string(s2.PublicKey().Marshal()) {
		t.Error("second call generated a new key; want the existing one reused")
	}
	if _, err := os.Stat(filepath.Join(dir, PublicKeyFileName)); err != nil {
		t.Errorf("public key not restored: %v", err)
	}

	// A corrupt key is an error, not silently replaced.
	os.WriteFile(key, []byte("garbage"), 0o600)
	if _, err := loadOrCreateKey(dir, ""); err == nil {
		t.Error("corrupt key accepted; want an error")
	}
}

func TestWriteProfile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "with space")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	signer, err := loadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	cert, line := signUser(t, testCA(t), signer.PublicKey(), now.Add(-time.Minute), now.Add(time.Hour), "alice", "root")
	hostCA := hostCALine(t)
	p := newProfile(dir)
	err = writeProfile(p, profileInput{
		bastion: "https://bastion.example.com", sshAddress: "bastion.example.com:2222",
		hostCA: hostCA, issuer: "corp", cert: cert, certLine: line, serial: "42",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{p.KeyFile, 0o600}, {p.CertFile, 0o644}, {p.KnownHosts, 0o644}, {p.SSHConfig, 0o644},
		{filepath.Join(dir, ProfileFileName), 0o644},
	} {
		if got := mode(t, f.path); got != f.mode {
			t.Errorf("%s mode = %o; want %o", filepath.Base(f.path), got, f.mode)
		}
	}
	if b, _ := os.ReadFile(p.CertFile); string(b) != line+"\n" {
		t.Errorf("certificate file = %q; want %q", b, line+"\n")
	}
	if b, _ := os.ReadFile(p.KnownHosts); string(b) != hostCA+"\n" {
		t.Errorf("known_hosts = %q; want %q", b, hostCA+"\n")
	}
	cfg, _ := os.ReadFile(p.SSHConfig)
	for _, want := range []string{
		"Host bastion.example.com\n",
		"    HostName bastion.example.com\n",
		"    Port 2222\n",
		"    User alice\n",
		`    IdentityFile "` + p.KeyFile + `"` + "\n",
		`    CertificateFile "` + p.CertFile + `"` + "\n",
		"    IdentitiesOnly yes\n",
		`    UserKnownHostsFile "` + p.KnownHosts + `"` + "\n",
		"Host *\n",
		`    UserKnownHostsFile ~/.ssh/known_hosts "` + p.KnownHosts + `"` + "\n",
		"    SendEnv POSTERN_JSON_ERRORS\n",
	} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("ssh_config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(string(cfg), "SetEnv") {
		t.Errorf("ssh_config sets an environment variable without JSONErrors:\n%s", cfg)
	}
	var pf map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, ProfileFileName))
	if err := json.Unmarshal(b, &pf); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"bastion": "https://bastion.example.com", "issuer": "corp", "username": "alice",
		"bastion_host": "bastion.example.com", "ssh_address": "bastion.example.com:2222", "serial": "42",
	} {
		if pf[k] != want {
			t.Errorf("profile.json %s = %v; want %v", k, pf[k], want)
		}
	}

	got, err := LoadProfile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Username != "alice" || got.BastionHost != "bastion.example.com" || !got.ValidBefore.Equal(now.Add(time.Hour)) ||
		strings.Join(got.Principals, ",") != "alice,root" || got.Bastion != "https://bastion.example.com" {
		t.Errorf("LoadProfile = %+v; want alice on bastion.example.com until %v", got, now.Add(time.Hour))
	}
	if !got.Fresh(now) {
		t.Error("fresh certificate reported stale")
	}
	s, err := got.Signer()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.PublicKey().(*ssh.Certificate); !ok {
		t.Errorf("Signer public key is %T; want a certificate", s.PublicKey())
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover file %s", e.Name())
		}
	}
}

// TestSSHConfigParsedByOpenSSH checks the generated ssh_config with the
// stock client's own parser (ssh -G): the bastion gets its port, user, key
// and certificate; a target reached through -J gets the key, certificate and
// the host-CA known_hosts.
func TestSSHConfigParsedByOpenSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		testutil.Missing(t, "ssh (openssh-client) is not installed")
	}
	dir := t.TempDir()
	signer, err := loadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, line := signUser(t, testCA(t), signer.PublicKey(), now.Add(-time.Minute), now.Add(time.Hour), "alice")
	p := newProfile(dir)
	p.JSONErrors = true
	if err := writeProfile(p, profileInput{
		bastion: "http://127.0.0.1:8080", sshAddress: ":2222", hostCA: hostCALine(t), cert: cert, certLine: line,
	}); err != nil {
		t.Fatal(err)
	}
	resolve := func(host string) map[string][]string {
		t.Helper()
		out, err := exec.Command("ssh", "-G", "-F", p.SSHConfig, host).Output()
		if err != nil {
			t.Fatalf("ssh -G %s: %v", host, err)
		}
		m := map[string][]string{}
		for l := range strings.Lines(string(out)) {
			k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
			m[k] = append(m[k], v)
		}
		return m
	}
	tests := []struct {
		name, host string
		want       map[string]string
	}{
		{"bastion", "127.0.0.1", map[string]string{
			"hostname": "127.0.0.1", "port": "2222", "user": "alice", "identitiesonly": "yes",
			"identityfile": p.KeyFile, "certificatefile": p.CertFile, "userknownhostsfile": p.KnownHosts,
		}},
		{"target", "web-1", map[string]string{
			"hostname": "web-1", "port": "22",
			"identityfile": p.KeyFile, "certificatefile": p.CertFile,
			"sendenv": "POSTERN_JSON_ERRORS", "setenv": "POSTERN_JSON_ERRORS=1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resolve(tt.host)
			for k, want := range tt.want {
				if !containsPath(got[k], want) {
					t.Errorf("%s = %q; want it to include %q", k, got[k], want)
				}
			}
		})
	}
	if kh := resolve("web-1")["userknownhostsfile"]; len(kh) != 1 || !strings.HasSuffix(kh[0], " "+p.KnownHosts) {
		t.Errorf("target userknownhostsfile = %q; want ~/.ssh/known_hosts then %s", kh, p.KnownHosts)
	}
}

func containsPath(vals []string, want string) bool {
	for _, v := range vals {
		for _, f := range strings.Fields(v) {
			if f == want {
				return true
			}
		}
	}
	return false
}

// TestProfileUsernameFromIdentity checks that the username comes from the
// identity the certificate carries, not from the (sorted) principals.
func TestProfileUsernameFromIdentity(t *testing.T) {
	dir := t.TempDir()
	signer, err := loadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := &ssh.Certificate{
		Key: signer.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"root", "zed"},
		ValidAfter: uint64(now.Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			certs.IdentityExtension: certs.EncodeIdentity(certs.Identity{Issuer: "corp", Subject: "1", Username: "zed"}),
		}},
	}
	if err := c.SignCert(rand.Reader, testCA(t)); err != nil {
		t.Fatal(err)
	}
	p := newProfile(dir)
	if err := writeProfile(p, profileInput{
		bastion: "https://b.example.com", sshAddress: "b.example.com:22", hostCA: hostCALine(t),
		cert: c, certLine: string(ssh.MarshalAuthorizedKey(c)),
	}); err != nil {
		t.Fatal(err)
	}
	if p.Username != "zed" || p.Issuer != "corp" {
		t.Errorf("username, issuer = %q, %q; want zed, corp", p.Username, p.Issuer)
	}
	if b, _ := os.ReadFile(p.SSHConfig); !strings.Contains(string(b), "    User zed\n") {
		t.Errorf("ssh_config lacks User zed:\n%s", b)
	}
}

func TestSplitSSHAddress(t *testing.T) {
	tests := []struct {
		name, addr, bastion, wantHost, wantPort string
		wantErr                                 bool
	}{
		{name: "host and port", addr: "bastion.example.com:2222", bastion: "https://x.example.com", wantHost: "bastion.example.com", wantPort: "2222"},
		{name: "no host", addr: ":2222", bastion: "http://127.0.0.1:8080", wantHost: "127.0.0.1", wantPort: "2222"},
		{name: "unspecified", addr: "0.0.0.0:2222", bastion: "https://b.example.com", wantHost: "b.example.com", wantPort: "2222"},
		{name: "ipv6 unspecified", addr: "[::]:22", bastion: "http://[::1]:8080", wantHost: "::1", wantPort: "22"},
		{name: "no port", addr: "bastion.example.com", bastion: "https://b.example.com", wantHost: "bastion.example.com", wantPort: "22"},
		{name: "empty", addr: "", bastion: "https://b.example.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, p, err := splitSSHAddress(tt.addr, tt.bastion)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v; want error %v", err, tt.wantErr)
			}
			if h != tt.wantHost || p != tt.wantPort {
				t.Errorf("got %q %q; want %q %q", h, p, tt.wantHost, tt.wantPort)
			}
		})
	}
}

func TestKnownHostsLines(t *testing.T) {
	a, b := hostCALine(t), hostCALine(t)
	plain := strings.TrimPrefix(a, "@cert-authority * ")
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "one", in: a, want: a + "\n"},
		{name: "rotation", in: a + "\n" + b + "\n", want: a + "\n" + b + "\n"},
		{name: "plain key", in: "* " + plain, wantErr: true},
		{name: "revoked marker", in: "@revoked * " + plain, wantErr: true},
		{name: "garbage", in: "@cert-authority * ssh-ed25519 AAAA", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := knownHostsLines(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v; want error %v", err, tt.wantErr)
			}
			if string(got) != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestFresh(t *testing.T) {
	after := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &Profile{ValidAfter: after, ValidBefore: after.Add(10 * time.Hour)}
	tests := []struct {
		name      string
		at        time.Time
		fresh, ok bool
	}{
		{"before validity", after.Add(-time.Second), false, false},
		{"start", after, true, true},
		{"four fifths used", after.Add(8*time.Hour - time.Second), true, true},
		{"last fifth", after.Add(8*time.Hour + time.Second), false, true},
		{"expired", after.Add(10 * time.Hour), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Fresh(tt.at); got != tt.fresh {
				t.Errorf("Fresh = %v; want %v", got, tt.fresh)
			}
			if got := p.Valid(tt.at); got != tt.ok {
				t.Errorf("Valid = %v; want %v", got, tt.ok)
			}
		})
	}
}

func TestParseIssuedCert(t *testing.T) {
	ca := testCA(t)
	mine, other := testCA(t), testCA(t)
	now := time.Now()
	_, good := signUser(t, ca, mine.PublicKey(), now, now.Add(time.Hour), "alice")
	_, foreign := signUser(t, ca, other.PublicKey(), now, now.Add(time.Hour), "alice")
	host := &ssh.Certificate{Key: mine.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"h"}, ValidBefore: ssh.CertTimeInfinity}
	if err := host.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, line string
		wantErr    bool
	}{
		{"ours", good, false},
		{"another key", foreign, true},
		{"host cert", string(ssh.MarshalAuthorizedKey(host)), true},
		{"plain key", string(ssh.MarshalAuthorizedKey(mine.PublicKey())), true},
		{"garbage", "ssh-ed25519-cert-v01@openssh.com AAAA", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseIssuedCert(tt.line, mine.PublicKey())
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v; want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestPickIssuer(t *testing.T) {
	corp := IssuerInfo{Name: "corp", Kind: "human"}
	gh := IssuerInfo{Name: "github", Kind: "agent"}
	okta := IssuerInfo{Name: "okta"}
	tests := []struct {
		name    string
		list    []IssuerInfo
		pick    string
		want    string
		wantErr bool
	}{
		{name: "only human", list: []IssuerInfo{gh, corp}, want: "corp"},
		{name: "named", list: []IssuerInfo{corp, okta}, pick: "okta", want: "okta"},
		{name: "named agent", list: []IssuerInfo{corp, gh}, pick: "github", want: "github"},
		{name: "several", list: []IssuerInfo{corp, okta}, wantErr: true},
		{name: "unknown", list: []IssuerInfo{corp}, pick: "nope", wantErr: true},
		{name: "agents only", list: []IssuerInfo{gh}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickIssuer(tt.list, tt.pick)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v; want error %v", err, tt.wantErr)
			}
			if got.Name != tt.want {
				t.Errorf("got %q; want %q", got.Name, tt.want)
			}
		})
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("HOME", "/home/u")
	tests := []struct{ name, url, want string }{
		{"https", "https://bastion.example.com", "/home/u/.postern/bastion.example.com"},
		{"port", "http://127.0.0.1:8080/", "/home/u/.postern/127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DefaultDir(tt.url)
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "bastion.example.com", "ftp://x", "https://"} {
		if _, err := DefaultDir(bad); err == nil {
			t.Errorf("DefaultDir(%q) succeeded; want an error", bad)
		}
	}
}

// layOutProfile lays out a complete profile for bastion in dir.
func layOutProfile(t *testing.T, dir, bastion string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	signer, err := loadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, line := signUser(t, testCA(t), signer.PublicKey(), now, now.Add(time.Hour), "alice")
	if err := writeProfile(newProfile(dir), profileInput{
		bastion: bastion, sshAddress: ":2222", hostCA: hostCALine(t), cert: cert, certLine: line,
	}); err != nil {
		t.Fatal(err)
	}
}

func TestFindProfile(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if _, err := FindProfile("", ""); !errors.Is(err, ErrNoProfile) {
		t.Errorf("no profiles: err = %v; want ErrNoProfile", err)
	}
	layOutProfile(t, filepath.Join(home, ".postern", "a.example.com"), "https://a.example.com")
	p, err := FindProfile("", "")
	if err != nil || p.Bastion != "https://a.example.com" {
		t.Errorf("one profile: %+v, %v; want a.example.com's", p, err)
	}
	layOutProfile(t, filepath.Join(home, ".postern", "b.example.com"), "https://b.example.com")
	if _, err := FindProfile("", ""); err == nil || !strings.Contains(err.Error(), "--bastion or --dir") {
		t.Errorf("two profiles: err = %v; want a request to choose", err)
	}
	if p, err := FindProfile("https://b.example.com", ""); err != nil || p.Bastion != "https://b.example.com" {
		t.Errorf("by bastion: %+v, %v; want b.example.com's", p, err)
	}
	other := filepath.Join(t.TempDir(), "elsewhere")
	layOutProfile(t, other, "https://c.example.com")
	if p, err := FindProfile("https://a.example.com", other); err != nil || p.Dir != other {
		t.Errorf("by dir: %+v, %v; want the profile in %s", p, err, other)
	}
	if _, err := FindProfile("https://nope.example.com", ""); !errors.Is(err, ErrNoProfile) {
		t.Errorf("unknown bastion: err = %v; want ErrNoProfile", err)
	}
	// A profile whose key was removed is incomplete, not silently used.
	os.Remove(filepath.Join(other, KeyFileName))
	if _, err := LoadProfile(other); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("profile without key: err = %v; want incomplete", err)
	}
}

func TestValidConfigValues(t *testing.T) {
	tests := []struct {
		name, v    string
		host, user bool
	}{
		{"name", "bastion.example.com", true, true},
		{"ipv6", "::1", true, true},
		{"email", "alice@example.com", false, true},
		{"unicode user", "jürgen", false, true},
		{"newline", "a\nProxyCommand evil", false, false},
		{"space", "a b", false, false},
		{"quote", `a"b`, false, false},
		{"percent token", "%d", false, false},
		{"env expansion", "${HOME}", false, false},
		{"comment", "a#b", false, false},
		{"option-like", "-oProxyCommand=x", false, false},
		{"pattern", "*", false, true}, // a literal name for User, a pattern for Host
		{"empty", "", false, false},
		{"nbsp", "a\u00a0b", false, false},
		{"invalid utf8", "a\xffb", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := validHost(tt.v); got != tt.host {
				t.Errorf("validHost(%q) = %v; want %v", tt.v, got, tt.host)
			}
			if got := validUser(tt.v); got != tt.user {
				t.Errorf("validUser(%q) = %v; want %v", tt.v, got, tt.user)
			}
		})
	}
}

// TestWriteProfileRefusesInjection checks that a bastion cannot smuggle
// ssh_config directives through the SSH address or the username.
func TestWriteProfileRefusesInjection(t *testing.T) {
	dir := t.TempDir()
	signer, err := loadOrCreateKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	evil := "alice\n    ProxyCommand touch /tmp/pwned"
	cert, line := signUser(t, testCA(t), signer.PublicKey(), now, now.Add(time.Hour), evil)
	_, okLine := signUser(t, testCA(t), signer.PublicKey(), now, now.Add(time.Hour), "alice")
	okCert, _ := parseIssuedCert(okLine, signer.PublicKey())
	tests := []struct {
		name string
		in   profileInput
	}{
		{"username", profileInput{bastion: "https://b", sshAddress: "b:22", hostCA: hostCALine(t), cert: cert, certLine: line}},
		{"host", profileInput{bastion: "https://b", sshAddress: "b\n  ProxyCommand x:22", hostCA: hostCALine(t), cert: okCert, certLine: okLine}},
		{"port", profileInput{bastion: "https://b", sshAddress: "b:22 x", hostCA: hostCALine(t), cert: okCert, certLine: okLine}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := writeProfile(newProfile(dir), tt.in); err == nil {
				t.Error("writeProfile accepted it; want an error")
			}
			if _, err := os.Stat(filepath.Join(dir, SSHConfigFileName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("ssh_config written: %v", err)
			}
		})
	}
}

// FuzzSSHConfig checks that whatever host and username pass validation,
// the rendered ssh_config holds exactly the directives postern writes.
func FuzzSSHConfig(f *testing.F) {
	for _, s := range [][2]string{{"alice", "b.example.com"}, {"a@b.c", "::1"}, {"x\ny", "h"}, {"%h", "h"}, {"u", "h\rProxyCommand"}} {
		f.Add(s[0], s[1])
	}
	allowed := map[string]bool{"Host": true, "HostName": true, "Port": true, "User": true, "IdentityFile": true,
		"CertificateFile": true, "IdentitiesOnly": true, "UserKnownHostsFile": true, "SendEnv": true, "SetEnv": true}
	f.Fuzz(func(t *testing.T, user, host string) {
		if !validUser(user) || !validHost(host) {
			return
		}
		p := newProfile("/home/u/.postern/b")
		p.Username, p.BastionHost, p.SSHAddress, p.JSONErrors = user, host, net.JoinHostPort(host, "2222"), true
		lines := 0
		for l := range strings.Lines(string(sshConfig(p))) {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			lines++
			if kw, _, _ := strings.Cut(l, " "); !allowed[kw] {
				t.Fatalf("unexpected directive %q for user %q host %q", l, user, host)
			}
		}
		if lines != 14 {
			t.Fatalf("%d directives for user %q host %q; want 14", lines, user, host)
		}
	})
}

// FuzzKnownHostsLines checks that whatever the bastion sends, what reaches
// known_hosts is only whole @cert-authority lines ssh can parse.
func FuzzKnownHostsLines(f *testing.F) {
	ca := "@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx5ZYa0bCz3pY2bYcCZ+7k0uJYQk3b1e6Dqk0cJcE3x"
	for _, s := range []string{ca, ca + "\n" + ca, "@revoked * x", ca + "\n* ssh-ed25519 AAAA", "\n\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := knownHostsLines(in)
		if err != nil {
			return
		}
		for l := range strings.Lines(string(out)) {
			marker, _, _, _, rest, err := ssh.ParseKnownHosts([]byte(l))
			if err != nil || marker != "cert-authority" || len(rest) != 0 || !strings.HasPrefix(l, "@cert-authority ") {
				t.Fatalf("line %q of %q: marker %q, rest %q, err %v", l, out, marker, rest, err)
			}
		}
	})
}

// TestLoadOrCreateKeyConcurrent checks that logins racing in one profile
// end up with one key, so their certificates are all for it.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	keys := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := loadOrCreateKey(dir, "")
			if err != nil {
				t.Error(err)
				keys <- ""
				return
			}
			keys <- string(s.PublicKey().Marshal())
		})
	}
	wg.Wait()
	close(keys)
	first := <-keys
	for k := range keys {
		if k != first {
			t.Fatal("concurrent logins generated different keys")
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, KeyFileName))
	s, err := ssh.ParsePrivateKey(b)
	if err != nil || string(s.PublicKey().Marshal()) != first {
		t.Errorf("the key on disk is not the one returned (%v)", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover temporary file %s", e.Name())
		}
	}
}
