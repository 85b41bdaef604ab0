package certs

import (
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
)

// SignOptions describe one certificate. Authority.Sign applies them in a
// fixed order, the same for every kind postern issues: user certificates
// (user CA), postern's and the inner hop's host certificates (host CA) and
// the certificates postern logs in to targets with (target CA).
type SignOptions struct {
	// CA is the authority that signs. Required.
	CA *CA
	// Type is ssh.UserCert or ssh.HostCert. Required.
	Type uint32
	// KeyID is the certificate's key id; with SerialInKeyID, ":<serial>"
	// is appended.
	KeyID         string
	SerialInKeyID bool
	// Principals are the logins (user certificates) or host names (host
	// certificates) it is valid for: explicit, never empty (OpenSSH and
	// x/crypto read an empty list as "any").
	Principals []string
	// TTL is how long it is valid from now; must be positive.
	TTL time.Duration
	// Backdate starts the validity this long before now, for clocks behind
	// postern's; Slack also ends it this much after now+TTL, for clocks
	// ahead.
	Backdate, Slack time.Duration
	// Extensions and CriticalOptions are copied into the certificate.
	Extensions, CriticalOptions map[string]string
	// Now is the time of issue; the authority's clock if zero.
	Now time.Time
}

// Sign is postern's one signing path. It checks the options (a plain public
// key, explicit principals, a positive lifetime, a CA with its private
// key), draws a random non-zero serial, sets the validity from the clock,
// and signs.
func (a *Authority) Sign(pub ssh.PublicKey, o SignOptions) (*ssh.Certificate, error) {
	kind := "user"
	if o.Type == ssh.HostCert {
		kind = "host"
	}
	switch {
	case pub == nil:
		return nil, fmt.Errorf("sign %s certificate: no public key", kind)
	case o.Type != ssh.UserCert && o.Type != ssh.HostCert:
		return nil, fmt.Errorf("sign certificate: unknown type %d", o.Type)
	case o.CA == nil || o.CA.signer == nil:
		return nil, fmt.Errorf("sign %s certificate: the CA was opened without its private key", kind)
	case len(o.Principals) == 0 || slices.Contains(o.Principals, ""):
		return nil, fmt.Errorf("sign %s certificate: no principals", kind)
	case o.TTL <= 0:
		return nil, fmt.Errorf("sign %s certificate: lifetime must be positive", kind)
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, fmt.Errorf("sign %s certificate: the key is itself a certificate", kind)
	}
	now := o.Now
	if now.IsZero() {
		now = a.now()
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	keyID := o.KeyID
	if o.SerialInKeyID {
		keyID += ":" + strconv.FormatUint(serial, 10)
	}
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        o.Type,
		KeyId:           keyID,
		ValidPrincipals: slices.Clone(o.Principals),
		ValidAfter:      unixTime(now.Add(-o.Backdate)),
		ValidBefore:     unixTime(now.Add(o.TTL + o.Slack)),
		Permissions: ssh.Permissions{
			Extensions:      maps.Clone(o.Extensions),
			CriticalOptions: maps.Clone(o.CriticalOptions),
		},
	}
	if err := cert.SignCert(rand.Reader, o.CA.signer); err != nil {
		return nil, fmt.Errorf("sign %s certificate: %w", kind, err)
	}
	return cert, nil
}

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func unixTime(t time.Time) uint64 {
	if t.Unix() < 0 {
		return 0
	}
	return uint64(t.Unix())
}
