package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

// CA algorithms accepted in config.CA.Algorithm for generated keys.
const (
	AlgorithmEd25519   = "ed25519"
	AlgorithmECDSAP256 = "ecdsa-p256"
	AlgorithmRSA3072   = "rsa-3072"
)

// The CA names used by LoadAuthority; they name the generated key files
// (<data_dir>/ca/<name>_ca) and appear in error messages.
const (
	CAUser   = "user"
	CAHost   = "host"
	CATarget = "target"
)

// certBackdate is how far valid_after is backdated so that a target whose clock
// runs a little behind still accepts a fresh certificate.
const certBackdate = time.Minute

// targetClockSkew is the clock difference between postern and a target that
// a target certificate tolerates either way: valid_after is backdated and
// valid_before extended by it. Target certificates authenticate one
// connection of a key that only postern holds, so the wider window costs
// nothing, while a target whose clock is a few minutes off would otherwise
// refuse every login.
const targetClockSkew = 5 * time.Minute

// CA is one certificate authority: a signing key plus extra public keys it
// also trusts while a new signing key rolls out. A CA is immutable after
// loading and safe for concurrent use.
type CA struct {
	name    string
	signer  ssh.Signer      // nil for a public-only CA opened for export
	trusted []ssh.PublicKey // signing key first, then config.CA.Trusted
	source  string          // where the key came from, for messages
}

// LoadCA loads the CA called name (user, host or target). The private key is
// taken from cfg.Key (inline PEM) if set, else from cfg.KeyFile, else from
// <dataDir>/ca/<name>_ca, which is generated on first use (directory 0700,
// key 0600 in OpenSSH PEM format, plus <name>_ca.pub). A key file readable by
// group or others is refused.
func LoadCA(name string, cfg config.CA, dataDir string) (*CA, error) {
	return loadCA(name, cfg, dataDir, true)
}

// OpenCA is LoadCA for read-only uses such as `postern ca export`: it never
// generates a key, and when the default key file exists but this process may
// not read it, it falls back to the public key in <name>_ca.pub. A CA opened
// from the public key alone has a nil Signer.
func OpenCA(name string, cfg config.CA, dataDir string) (*CA, error) {
	return loadCA(name, cfg, dataDir, false)
}

func loadCA(name string, cfg config.CA, dataDir string, generate bool) (*CA, error) {
	ca := &CA{name: name}
	switch {
	case strings.TrimSpace(cfg.Key) != "":
		s, err := parseSigner([]byte(cfg.Key))
		if err != nil {
			return nil, fmt.Errorf("ca.%s.key: %w", name, err)
		}
		ca.signer, ca.source = s, "ca."+name+".key"
	case cfg.KeyFile != "":
		s, err := readKeyFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ca.%s.key_file: %w", name, err)
		}
		ca.signer, ca.source = s, cfg.KeyFile
	default:
		if dataDir == "" {
			return nil, fmt.Errorf("ca.%s: no key, key_file or data_dir to generate one in", name)
		}
		path := filepath.Join(dataDir, "ca", keyFileName(name))
		ca.source = path
		s, err := readKeyFile(path)
		switch {
		case err == nil:
			if want := algorithmKeyType(cfg.Algorithm); cfg.Algorithm != "" && want != "" && s.PublicKey().Type() != want {
				return nil, fmt.Errorf("ca.%s.algorithm is %s but the key at %s is %s; drop the setting, or move the key away to generate a new one (and list the old public key in ca.%s.trusted while certificates signed by it are in use)",
					name, cfg.Algorithm, path, s.PublicKey().Type(), name)
			}
			ca.signer = s
		case errors.Is(err, fs.ErrNotExist) && generate:
			if s, err = generateKeyFile(path, cfg.Algorithm); err != nil {
				return nil, fmt.Errorf("ca.%s: generate key: %w", name, err)
			}
			ca.signer = s
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("ca.%s: no key at %s yet (start postern serve once, or set ca.%s.key_file)", name, path, name)
		case errors.Is(err, fs.ErrPermission) && !generate:
			pub, perr := readPublicKeyFile(path + ".pub")
			if perr != nil {
				return nil, fmt.Errorf("ca.%s: %w (and %w)", name, err, perr)
			}
			ca.trusted = append(ca.trusted, pub)
		default:
			return nil, fmt.Errorf("ca.%s: %w", name, err)
		}
	}
	if ca.signer != nil {
		ca.trusted = append(ca.trusted, ca.signer.PublicKey())
	}
	for i, line := range cfg.Trusted {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("ca.%s.trusted[%d]: not an authorized_keys line: %w", name, i, err)
		}
		if _, ok := pub.(*ssh.Certificate); ok {
			return nil, fmt.Errorf("ca.%s.trusted[%d]: a certificate cannot be a CA key; give the plain public key", name, i)
		}
		if !ca.IsTrusted(pub) {
			ca.trusted = append(ca.trusted, pub)
		}
	}
	return ca, nil
}

// Name returns the CA's name (user, host or target).
func (c *CA) Name() string { return c.name }

// Signer returns the signing key, or nil for a CA opened from its public key
// alone (see OpenCA).
func (c *CA) Signer() ssh.Signer { return c.signer }

// PublicKey returns the public half of the signing key (the first trusted key
// for a public-only CA).
func (c *CA) PublicKey() ssh.PublicKey { return c.trusted[0] }

// Trusted returns every key this CA accepts, the signing key first.
func (c *CA) Trusted() []ssh.PublicKey { return slices.Clone(c.trusted) }

// IsTrusted reports whether key is the signing key or one of the extra trusted
// keys.
func (c *CA) IsTrusted(key ssh.PublicKey) bool {
	if key == nil {
		return false
	}
	m := key.Marshal()
	for _, k := range c.trusted {
		if bytes.Equal(k.Marshal(), m) {
			return true
		}
	}
	return false
}

// AuthorizedKeys returns one authorized_keys line per trusted key (signing key
// first), suitable for sshd's TrustedUserCAKeys file.
func (c *CA) AuthorizedKeys() []string {
	lines := make([]string, 0, len(c.trusted))
	for _, k := range c.trusted {
		lines = append(lines, keyLine(k)+" postern-"+c.name+"-ca")
	}
	return lines
}

func keyLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func parseSigner(pemBytes []byte) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errors.New("the key is passphrase-protected; give an unencrypted key")
		}
		return nil, fmt.Errorf("not a private key: %w", err)
	}
	switch s.PublicKey().Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	case ssh.KeyAlgoRSA:
		if n := rsaBits(s.PublicKey()); n < 3072 {
			return nil, fmt.Errorf("RSA CA key has %d bits; use at least 3072 (or ed25519)", n)
		}
	default:
		return nil, fmt.Errorf("key type %s cannot be a CA key; use ed25519, ecdsa-p256 or rsa-3072", s.PublicKey().Type())
	}
	return s, nil
}

func readKeyFile(path string) (ssh.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := parseSigner(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func readPublicKeyFile(path string) (ssh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// generateKeyFile creates a key of the given algorithm at path. The key is
// written to a temporary file and hard-linked into place, which fails if path
// exists: two replicas starting at once on a shared volume never overwrite
// each other's key nor read a half-written one; the loser reads the winner's.
func generateKeyFile(path, algorithm string) (ssh.Signer, error) {
	var key crypto.Signer
	var err error
	switch algorithm {
	case "", AlgorithmEd25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case AlgorithmECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case AlgorithmRSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, fmt.Errorf("unknown algorithm %q (use ed25519, ecdsa-p256 or rsa-3072)", algorithm)
	}
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// MkdirAll leaves an existing directory's mode alone; tighten ours.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(key, "postern "+filepath.Base(path))
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Create(path, pem.EncodeToMemory(block), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(path) // another replica generated it first
		}
		return nil, err
	}
	pub := keyLine(signer.PublicKey()) + " postern " + filepath.Base(path) + "\n"
	if err := atomicfile.Write(path+".pub", []byte(pub), 0o644); err != nil {
		return nil, err
	}
	return signer, nil
}

// algorithmKeyType returns the SSH key type a generated key of algorithm
// has, or "" for an unknown algorithm.
func algorithmKeyType(algorithm string) string {
	switch algorithm {
	case "", AlgorithmEd25519:
		return ssh.KeyAlgoED25519
	case AlgorithmECDSAP256:
		return ssh.KeyAlgoECDSA256
	case AlgorithmRSA3072:
		return ssh.KeyAlgoRSA
	}
	return ""
}

func rsaBits(pub ssh.PublicKey) int {
	cpk, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return 0
	}
	rk, ok := cpk.CryptoPublicKey().(*rsa.PublicKey)
	if !ok {
		return 0
	}
	return rk.N.BitLen()
}

// Authority is postern's three CAs and its audit key: User signs the
// certificates users present to postern, Host signs postern's own host
// certificate and the per-target host certificates of the inner hop, Target
// signs the short-lived certificates postern presents to targets, and Audit
// signs audit checkpoints and sealed recordings (it signs no certificate).
type Authority struct {
	User, Host, Target *CA
	// Audit is the audit signing key.
	Audit *AuditKey
	// Now is the clock certificates are issued by; time.Now if nil.
	Now func() time.Time
}

// LoadAuthority loads (or on first start generates) the three CAs named user,
// host and target, and the audit signing key.
func LoadAuthority(cfg config.CAs, dataDir string) (*Authority, error) {
	var a Authority
	var err error
	if a.User, err = LoadCA(CAUser, cfg.User, dataDir); err != nil {
		return nil, err
	}
	if a.Host, err = LoadCA(CAHost, cfg.Host, dataDir); err != nil {
		return nil, err
	}
	if a.Target, err = LoadCA(CATarget, cfg.Target, dataDir); err != nil {
		return nil, err
	}
	if a.Audit, err = LoadAuditKey(cfg.Audit, dataDir); err != nil {
		return nil, err
	}
	return &a, nil
}

// HostCALine returns the known_hosts line(s) that make ssh trust host
// certificates from the host CA: "@cert-authority * <key>", one line per
// trusted host CA key, joined by newlines without a trailing one.
func (a *Authority) HostCALine() string {
	lines := make([]string, 0, len(a.Host.trusted))
	for _, k := range a.Host.trusted {
		lines = append(lines, "@cert-authority * "+keyLine(k))
	}
	return strings.Join(lines, "\n")
}

// SignHost returns a host certificate for pub from the host CA, valid for the
// given principals (host names) from one minute ago until ttl from now.
func (a *Authority) SignHost(pub ssh.PublicKey, principals []string, ttl time.Duration) (*ssh.Certificate, error) {
	id := ""
	if len(principals) > 0 {
		id = "postern:host:" + principals[0]
	}
	return a.Sign(pub, SignOptions{CA: a.Host, Type: ssh.HostCert, KeyID: id, Principals: principals,
		TTL: ttl, Backdate: certBackdate})
}

// SignTarget returns a user certificate from the target CA that lets postern
// log in to a target as login: principal login, key id keyID (the identity it
// acts for), valid for ttl with targetClockSkew of slack on each side (a
// target whose clock is off by that much still accepts it), with permit-pty
// and permit-port-forwarding and nothing else.
func (a *Authority) SignTarget(pub ssh.PublicKey, login, keyID string, ttl time.Duration) (*ssh.Certificate, error) {
	return a.Sign(pub, SignOptions{CA: a.Target, Type: ssh.UserCert, KeyID: keyID, Principals: []string{login},
		TTL: ttl, Backdate: targetClockSkew, Slack: targetClockSkew,
		Extensions: map[string]string{"permit-pty": "", "permit-port-forwarding": ""}})
}

// newSerial returns a random non-zero serial number.
func newSerial() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("random serial: %w", err)
		}
		if s := binary.BigEndian.Uint64(b[:]); s != 0 {
			return s, nil
		}
	}
}

// Critical options a user certificate may carry (draft-miller-ssh-cert).
const (
	optSourceAddress  = "source-address"
	optForceCommand   = "force-command"
	optVerifyRequired = "verify-required"
)

// Codes returned by CheckUserCert in *usererr.Error.
const (
	CodeCertExpired        = "cert_expired"
	CodeCertNotYetValid    = "cert_not_yet_valid"
	CodeCertUnknownCA      = "cert_unknown_ca"
	CodeCertNotUser        = "cert_not_user"
	CodeCertNoPrincipals   = "cert_no_principals"
	CodeCertWrongLogin     = "cert_wrong_login"
	CodeCertCriticalOption = "cert_critical_option"
	CodeCertSourceAddress  = "cert_source_address"
	CodeCertNoIdentity     = "cert_no_identity"
)

func certErr(code, msg string, err error) *usererr.Error {
	return &usererr.Error{Status: http.StatusUnauthorized, Code: code, Msg: msg, Err: err}
}

// CheckUserCert checks a user certificate the way the bastion must before
// accepting it for login at time now from address src, and returns the
// identity it carries. It requires: a user certificate, signed (with a valid
// signature) by a key the user CA trusts, valid_after <= now < valid_before,
// a non-empty principal list containing login, only the critical options
// postern understands (source-address is enforced against src; force-command
// and verify-required are refused, since postern never issues them and cannot
// honour them on the outer hop), and a decodable identity extension.
// Revocation is not checked here. Failures are *usererr.Error values with the
// cert_* codes above.
func (a *Authority) CheckUserCert(cert *ssh.Certificate, login string, src netip.Addr, now time.Time) (Identity, error) {
	if cert == nil {
		return Identity{}, certErr(CodeCertNotUser, "not a certificate", nil)
	}
	if cert.CertType != ssh.UserCert {
		return Identity{}, certErr(CodeCertNotUser, "not a user certificate", fmt.Errorf("cert type %d", cert.CertType))
	}
	if !a.User.IsTrusted(cert.SignatureKey) {
		return Identity{}, certErr(CodeCertUnknownCA, "certificate is not signed by a trusted CA", nil)
	}
	if err := verifyCertSignature(cert); err != nil {
		return Identity{}, certErr(CodeCertUnknownCA, "certificate is not signed by a trusted CA", err)
	}
	unix := now.Unix()
	if unix < 0 || uint64(unix) < cert.ValidAfter {
		return Identity{}, certErr(CodeCertNotYetValid, "certificate is not yet valid", nil)
	}
	if uint64(unix) >= cert.ValidBefore {
		return Identity{}, certErr(CodeCertExpired, "certificate has expired", nil)
	}
	if len(cert.ValidPrincipals) == 0 {
		return Identity{}, certErr(CodeCertNoPrincipals, "certificate has no principals", nil)
	}
	if login == "" || !slices.Contains(cert.ValidPrincipals, login) {
		return Identity{}, certErr(CodeCertWrongLogin, "certificate does not allow login as "+printable(login), nil)
	}
	for opt, val := range cert.CriticalOptions {
		switch opt {
		case optSourceAddress:
			if err := checkSourceAddress(val, src); err != nil {
				return Identity{}, certErr(CodeCertSourceAddress, "certificate is not valid from this address", err)
			}
		case optForceCommand, optVerifyRequired:
			return Identity{}, certErr(CodeCertCriticalOption, "certificate critical option "+opt+" is not supported", nil)
		default:
			return Identity{}, certErr(CodeCertCriticalOption, "certificate has an unknown critical option", fmt.Errorf("option %q", opt))
		}
	}
	id, err := IdentityFromCert(cert)
	if err != nil {
		return Identity{}, certErr(CodeCertNoIdentity, "certificate carries no postern identity", err)
	}
	return id, nil
}

// verifyCertSignature checks the CA signature over the certificate. The bytes
// signed are the certificate's wire form without its trailing signature field
// (draft-miller-ssh-cert §2). SHA-1 RSA signatures are refused.
func verifyCertSignature(cert *ssh.Certificate) error {
	if cert.Signature == nil || cert.SignatureKey == nil {
		return errors.New("unsigned certificate")
	}
	if cert.Signature.Format == ssh.KeyAlgoRSA {
		return errors.New("ssh-rsa (SHA-1) certificate signature refused")
	}
	c := *cert
	c.Signature = nil
	out := c.Marshal()
	// Marshal writes an empty signature as a zero length; drop it.
	if err := cert.SignatureKey.Verify(out[:len(out)-4], cert.Signature); err != nil {
		return fmt.Errorf("certificate signature: %w", err)
	}
	return nil
}

// checkSourceAddress enforces a source-address critical option: a
// comma-separated list of addresses and CIDR prefixes.
func checkSourceAddress(list string, src netip.Addr) error {
	if !src.IsValid() {
		return errors.New("source address unknown")
	}
	src = src.Unmap()
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		var p netip.Prefix
		var err error
		if strings.Contains(item, "/") {
			p, err = netip.ParsePrefix(item)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(item)
			if err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return fmt.Errorf("bad source-address entry %q: %w", item, err)
		}
		if p.Masked().Contains(src) {
			return nil
		}
	}
	return fmt.Errorf("%s not in %q", src, list)
}

// printable quotes s for a message if it holds anything but plain characters.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return fmt.Sprintf("%q", s)
		}
	}
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
