package login

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/atomicfile"
)

// File names inside a profile directory.
const (
	KeyFileName        = "id_ed25519"
	PublicKeyFileName  = "id_ed25519.pub"
	CertFileName       = "id_ed25519-cert.pub"
	KnownHostsFileName = "known_hosts"
	SSHConfigFileName  = "ssh_config"
	ProfileFileName    = "profile.json"
)

// ErrNoProfile reports a directory that holds no postern profile.
var ErrNoProfile = errors.New("no postern profile; run postern login")

// Profile is a profile directory written by [Login].
type Profile struct {
	// Dir is the profile directory (absolute).
	Dir string
	// KeyFile is the private key.
	KeyFile string
	// CertFile is the user certificate.
	CertFile string
	// KnownHosts holds the host-CA line.
	KnownHosts string
	// SSHConfig is the generated ssh_config.
	SSHConfig string
	// Principals are the certificate's principals: the username and the
	// logins the bastion's roles grant.
	Principals []string
	// ValidAfter is the start of the certificate's validity.
	ValidAfter time.Time
	// ValidBefore is the end of the certificate's validity.
	ValidBefore time.Time
	// BastionHost is the Host alias of the bastion in SSHConfig.
	BastionHost string
	// Bastion is the bastion's HTTP API base URL.
	Bastion string
	// SSHAddress is the bastion's SSH host:port.
	SSHAddress string
	// Issuer is the name of the issuer used to log in; empty for a token
	// passed with --token-file or --token-env.
	Issuer string
	// Serial is the certificate's serial number, as the bastion reported it
	// (for postern ca revoke).
	Serial string
	// JSONErrors reports whether ssh_config asks the bastion for JSON error
	// messages (SetEnv POSTERN_JSON_ERRORS=1), as login --json does.
	JSONErrors bool
	// Username is the user's name at the bastion, from the identity the
	// certificate carries (the first principal if it carries none); it is
	// the User of the bastion's Host block.
	Username string
}

// profileFile is the JSON form of profile.json.
type profileFile struct {
	Bastion     string    `json:"bastion"`
	BastionHost string    `json:"bastion_host"`
	SSHAddress  string    `json:"ssh_address"`
	Issuer      string    `json:"issuer,omitempty"`
	Username    string    `json:"username"`
	Principals  []string  `json:"principals"`
	Serial      string    `json:"serial,omitempty"`
	ValidAfter  time.Time `json:"valid_after"`
	ValidBefore time.Time `json:"valid_before"`
	JSONErrors  bool      `json:"json_errors,omitempty"`
}

// DefaultDir returns the default profile directory for a bastion URL:
// ~/.postern/<bastion-host>/.
func DefaultDir(bastion string) (string, error) {
	u, err := parseBastionURL(bastion)
	if err != nil {
		return "", err
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory: %w", err)
	}
	return filepath.Join(home, ".postern", u.Hostname()), nil
}

// FindProfile locates the profile client commands use: dir if set, else the
// default directory of bastion if set, else the only profile under
// ~/.postern. It returns [ErrNoProfile] (wrapped) when there is none.
func FindProfile(bastion, dir string) (*Profile, error) {
	if dir != "" {
		return LoadProfile(dir)
	}
	if bastion != "" {
		d, err := DefaultDir(bastion)
		if err != nil {
			return nil, err
		}
		return LoadProfile(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, fmt.Errorf("find home directory: %w", err)
	}
	matches, _ := filepath.Glob(filepath.Join(home, ".postern", "*", ProfileFileName))
	switch len(matches) {
	case 0:
		return nil, ErrNoProfile
	case 1:
		return LoadProfile(filepath.Dir(matches[0]))
	default:
		return nil, errors.New("several postern profiles; choose one with --bastion or --dir")
	}
}

// LoadProfile reads the profile in dir. It does not check the certificate's
// validity; see [Profile.Valid].
func LoadProfile(dir string) (*Profile, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("profile directory: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(abs, ProfileFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", abs, ErrNoProfile)
	}
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	var pf profileFile
	if err := json.Unmarshal(b, &pf); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(abs, ProfileFileName), err)
	}
	p := newProfile(abs)
	p.Bastion, p.BastionHost, p.SSHAddress = pf.Bastion, pf.BastionHost, pf.SSHAddress
	p.Issuer, p.Username, p.Principals = pf.Issuer, pf.Username, pf.Principals
	p.ValidAfter, p.ValidBefore = pf.ValidAfter, pf.ValidBefore
	p.Serial, p.JSONErrors = pf.Serial, pf.JSONErrors
	for _, f := range []string{p.KeyFile, p.CertFile} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("profile %s is incomplete: %w", abs, err)
		}
	}
	return p, nil
}

func newProfile(dir string) *Profile {
	return &Profile{
		Dir:        dir,
		KeyFile:    filepath.Join(dir, KeyFileName),
		CertFile:   filepath.Join(dir, CertFileName),
		KnownHosts: filepath.Join(dir, KnownHostsFileName),
		SSHConfig:  filepath.Join(dir, SSHConfigFileName),
	}
}

// Valid reports whether the certificate is valid at now.
func (p *Profile) Valid(now time.Time) bool {
	return !now.Before(p.ValidAfter) && now.Before(p.ValidBefore)
}

// Fresh reports whether the certificate is valid at now and has more than a
// fifth of its lifetime left, the point at which Login renews it.
func (p *Profile) Fresh(now time.Time) bool {
	if !p.Valid(now) {
		return false
	}
	life := p.ValidBefore.Sub(p.ValidAfter)
	return p.ValidBefore.Sub(now) > life/5
}

// Signer returns the profile's private key paired with its certificate, for
// client commands that authenticate to the bastion with the profile.
func (p *Profile) Signer() (ssh.Signer, error) {
	cert, key, err := p.Credentials()
	if err != nil {
		return nil, err
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, fmt.Errorf("pair key and certificate: %w", err)
	}
	return s, nil
}

// Credentials reads the profile's certificate and the key it certifies from
// disk (each call reads them afresh: a renewal's new certificate is seen at
// once).
func (p *Profile) Credentials() (*ssh.Certificate, ssh.Signer, error) {
	kb, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	key, err := ssh.ParsePrivateKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("parse key %s: %w", p.KeyFile, err)
	}
	cert, err := readCert(p.CertFile)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// readCert reads an OpenSSH certificate file.
func readCert(path string) (*ssh.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %s: %w", path, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("%s holds a plain key, not a certificate", path)
	}
	return cert, nil
}

// loadOrCreateKey returns the profile's ed25519 key, generating it (mode 0600,
// OpenSSH format, with its .pub beside it) if absent.
func loadOrCreateKey(dir, comment string) (ssh.Signer, error) {
	path := filepath.Join(dir, KeyFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		s, perr := ssh.ParsePrivateKey(b)
		if perr != nil {
			return nil, fmt.Errorf("parse key %s (remove it to generate a new one): %w", path, perr)
		}
		// Rewrite the public half in case it was lost.
		if err := atomicfile.Write(filepath.Join(dir, PublicKeyFileName), authorizedKey(s.PublicKey(), comment), 0o644); err != nil {
			return nil, err
		}
		return s, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	switch err := atomicfile.Create(path, pem.EncodeToMemory(blk), 0o600); {
	case errors.Is(err, os.ErrExist):
		// Another login in this profile generated one first: use it, so the
		// certificates both logins write are for the same key.
		return loadOrCreateKey(dir, comment)
	case err != nil:
		return nil, err
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("load generated key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, PublicKeyFileName), authorizedKey(s.PublicKey(), comment), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// authorizedKey formats pub as an authorized_keys line with a comment.
func authorizedKey(pub ssh.PublicKey, comment string) []byte {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return []byte(line + "\n")
}

// profileInput is what writeProfile needs to lay out a profile.
type profileInput struct {
	bastion    string // API base URL
	sshAddress string // host:port
	hostCA     string // known_hosts line
	issuer     string
	cert       *ssh.Certificate
	certLine   string
	serial     string
}

// writeProfile writes the certificate, known_hosts, ssh_config and
// profile.json for in into the profile p, and fills p's fields. Everything
// is checked before the first file is written; profile.json, written last,
// is what marks the profile complete.
func writeProfile(p *Profile, in profileInput) error {
	host, port, err := splitSSHAddress(in.sshAddress, in.bastion)
	if err != nil {
		return err
	}
	if len(in.cert.ValidPrincipals) == 0 {
		return errors.New("the bastion issued a certificate without principals")
	}
	kh, err := knownHostsLines(in.hostCA)
	if err != nil {
		return err
	}
	if !validHost(host) || !validPort(port) {
		return fmt.Errorf("the bastion sent an unusable SSH address %q", in.sshAddress)
	}
	p.Bastion = in.bastion
	p.BastionHost = host
	p.SSHAddress = net.JoinHostPort(host, port)
	p.Issuer = in.issuer
	p.Serial = in.serial
	p.Principals = in.cert.ValidPrincipals
	// The bastion sorts principals; the identity it embeds names the user.
	// A certificate without one (not postern's) falls back to the first.
	p.Username = in.cert.ValidPrincipals[0]
	if id, err := certs.IdentityFromCert(in.cert); err == nil {
		p.Username = id.Username
		if p.Issuer == "" {
			p.Issuer = id.Issuer
		}
	}
	if strings.ContainsAny(p.Dir, "\r\n\"") {
		return fmt.Errorf("profile directory %q cannot be written to ssh_config", p.Dir)
	}
	if !validUser(p.Username) {
		return fmt.Errorf("the certificate's username %q cannot be written to ssh_config", p.Username)
	}
	p.ValidAfter = time.Unix(int64(in.cert.ValidAfter), 0).UTC()
	p.ValidBefore = certValidBefore(in.cert)

	line := strings.TrimSpace(in.certLine) + "\n"
	if err := atomicfile.Write(p.CertFile, []byte(line), 0o644); err != nil {
		return err
	}
	if err := atomicfile.Write(p.KnownHosts, kh, 0o644); err != nil {
		return err
	}
	return writeProfileConfig(p)
}

// writeProfileConfig writes p's ssh_config and profile.json.
func writeProfileConfig(p *Profile) error {
	if err := atomicfile.Write(p.SSHConfig, sshConfig(p), 0o644); err != nil {
		return err
	}
	pf := profileFile{
		Bastion: p.Bastion, BastionHost: p.BastionHost, SSHAddress: p.SSHAddress,
		Issuer: p.Issuer, Username: p.Username, Principals: p.Principals, Serial: p.Serial,
		ValidAfter: p.ValidAfter, ValidBefore: p.ValidBefore, JSONErrors: p.JSONErrors,
	}
	b, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode profile: %w", err)
	}
	return atomicfile.Write(filepath.Join(p.Dir, ProfileFileName), append(b, '\n'), 0o644)
}

// certValidBefore converts the certificate's valid_before, where the maximum
// value means "forever", to a time.
func certValidBefore(c *ssh.Certificate) time.Time {
	if c.ValidBefore == ssh.CertTimeInfinity || c.ValidBefore > 1<<62 {
		return time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	}
	return time.Unix(int64(c.ValidBefore), 0).UTC()
}

// knownHostsLines checks that text is one or more @cert-authority lines (one
// per trusted host CA key while a key rotates) with parsable keys and returns
// them newline-terminated. The server's host pattern (usually "*") is kept:
// the host CA vouches for the bastion and for every target reached through it.
func knownHostsLines(text string) ([]byte, error) {
	var b strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		marker, hosts, _, _, rest, err := ssh.ParseKnownHosts([]byte(line))
		if err != nil || marker != "cert-authority" || len(hosts) == 0 || len(rest) != 0 {
			return nil, errors.New("the bastion sent an invalid host CA line")
		}
		b.WriteString(line + "\n")
	}
	if b.Len() == 0 {
		return nil, errors.New("the bastion sent no host CA line")
	}
	return []byte(b.String()), nil
}

// splitSSHAddress splits the bastion's SSH address. An empty or unspecified
// host (":2222", "0.0.0.0:2222") is replaced by the API URL's host.
func splitSSHAddress(addr, bastion string) (host, port string, err error) {
	if addr == "" {
		return "", "", errors.New("the bastion did not say its SSH address")
	}
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "22"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		u, uerr := parseBastionURL(bastion)
		if uerr != nil {
			return "", "", uerr
		}
		host = u.Hostname()
	}
	if port == "" {
		port = "22"
	}
	return host, port, nil
}

// JSONErrorsEnv is the environment variable that asks the bastion for
// JSON error messages (held or denied commands) on a session.
const JSONErrorsEnv = "POSTERN_JSON_ERRORS"

// sshConfig renders the profile's ssh_config.
//
// The bastion block makes "ssh -F ssh_config <bastion-host>" (and the jump
// of -J) use the profile's key and certificate, the bastion's port and the
// username. The Host * block serves the targets of -J: their host
// certificates are signed by postern's host CA too (the bastion terminates
// the inner hop), so they need the @cert-authority line, and they must be
// offered the same key and certificate; the bastion reads
// POSTERN_JSON_ERRORS from the environment a session sends, so the variable
// is passed on (and set, for a --json profile). ~/.ssh/known_hosts comes first there
// so that keys ssh learns for other hosts are still saved in the user's own
// file when this file is Included from ~/.ssh/config; IdentitiesOnly is not
// set there, to leave other hosts' keys alone.
func sshConfig(p *Profile) []byte {
	_, port, err := net.SplitHostPort(p.SSHAddress)
	if err != nil {
		port = "22"
	}
	var b strings.Builder
	q := sshQuote
	fmt.Fprintf(&b, "# Written by postern login for %s; rewritten at every login.\n", p.Bastion)
	fmt.Fprintf(&b, "# Use: ssh -F %s -J %s <login>@<target>\n", q(p.SSHConfig), p.BastionHost)
	fmt.Fprintf(&b, "# or add \"Include %s\" at the top of ~/.ssh/config.\n", q(p.SSHConfig))
	fmt.Fprintf(&b, "# The Host * block offers this certificate to every host ssh connects to\n")
	fmt.Fprintf(&b, "# with this file; when including it, narrow that block to your targets.\n")
	fmt.Fprintf(&b, "Host %s\n", p.BastionHost)
	fmt.Fprintf(&b, "    HostName %s\n", p.BastionHost)
	fmt.Fprintf(&b, "    Port %s\n", port)
	fmt.Fprintf(&b, "    User %s\n", p.Username)
	fmt.Fprintf(&b, "    IdentityFile %s\n", q(p.KeyFile))
	fmt.Fprintf(&b, "    CertificateFile %s\n", q(p.CertFile))
	fmt.Fprintf(&b, "    IdentitiesOnly yes\n")
	fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", q(p.KnownHosts))
	fmt.Fprintf(&b, "Host *\n")
	fmt.Fprintf(&b, "    IdentityFile %s\n", q(p.KeyFile))
	fmt.Fprintf(&b, "    CertificateFile %s\n", q(p.CertFile))
	fmt.Fprintf(&b, "    UserKnownHostsFile ~/.ssh/known_hosts %s\n", q(p.KnownHosts))
	fmt.Fprintf(&b, "    SendEnv %s\n", JSONErrorsEnv)
	if p.JSONErrors {
		fmt.Fprintf(&b, "    SetEnv %s=1\n", JSONErrorsEnv)
	}
	return []byte(b.String())
}

// The values the bastion supplies (the SSH host and port, the username) are
// written into ssh_config, which ssh would obey line by line: a newline or a
// quote in them could add directives such as ProxyCommand. They are held to
// plain host, port and user-name characters; ssh's %-tokens and ${}
// expansion are refused too.

// validHost reports whether h is a plain host name or IP address.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':' || r == '_') {
			return false
		}
	}
	return h[0] != '-'
}

// validPort reports whether p is a TCP port number.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == p
}

// validUser reports whether u can be written as ssh_config's User: no
// spaces, control characters, quotes, comments or expansions.
func validUser(u string) bool {
	if u == "" || len(u) > 256 || u[0] == '-' {
		return false
	}
	for _, r := range u {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("\"'#%$\\`", r) || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return utf8.ValidString(u)
}

// sshQuote quotes a path for ssh_config when it holds a space.
func sshQuote(s string) string {
	if strings.ContainsAny(s, " \t\"") {
		return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
	}
	return s
}

// parseBastionURL checks a bastion base URL.
func parseBastionURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("no bastion URL; pass --bastion or set POSTERN_BASTION")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bastion URL %q must look like https://bastion.example.com", s)
	}
	return u, nil
}
