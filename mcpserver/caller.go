package mcpserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs/login"
)

// Caller is whom the MCP server acts for, and how it reaches the bastion as
// them.
type Caller interface {
	// Credentials returns the caller's user certificate and the key it
	// certifies. It is asked for every new connection and API request, so
	// a certificate renewed meanwhile (postern agent) is used at once.
	Credentials(ctx context.Context) (*ssh.Certificate, ssh.Signer, error)
	// Endpoints says where the bastion is.
	Endpoints() Endpoints
}

// Endpoints are where the bastion listens and what vouches for it.
type Endpoints struct {
	// SSHAddress is the host:port of the bastion's SSH listener.
	SSHAddress string
	// HostCAs are the host CA keys that certify the bastion and the inner
	// hop's per-target host keys.
	HostCAs []ssh.PublicKey
	// API is the HTTP API base URL.
	API string
	// PublicURL is the bastion's public URL, for the links agents are
	// given (approvals); API if empty.
	PublicURL string
	// HTTPClient sends the API requests; a client without an overall
	// timeout if nil.
	HTTPClient *http.Client
}

// ProfileCaller acts with a login profile (postern login, postern agent):
// the key and certificate files are read afresh for every connection, so
// a certificate another process renews is picked up.
type ProfileCaller struct {
	profile *login.Profile
	ep      Endpoints
}

// OpenProfile finds the profile the way every client command does (dir,
// else the default directory of bastion, else the only profile) and returns
// a Caller for it.
func OpenProfile(bastion, dir string) (*ProfileCaller, error) {
	if bastion == "" {
		bastion = os.Getenv(login.BastionEnv)
	}
	p, err := login.FindProfile(bastion, dir)
	if err != nil {
		return nil, err
	}
	kh, err := os.ReadFile(p.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.Dir, err)
	}
	cas, err := hostCAs(kh)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", p.Dir, err)
	}
	api := p.Bastion
	if bastion != "" {
		api = bastion
	}
	return &ProfileCaller{profile: p, ep: Endpoints{SSHAddress: p.SSHAddress, HostCAs: cas, API: api, PublicURL: p.Bastion}}, nil
}

// Credentials implements Caller.
func (c *ProfileCaller) Credentials(context.Context) (*ssh.Certificate, ssh.Signer, error) {
	return c.profile.Credentials()
}

// Endpoints implements Caller.
func (c *ProfileCaller) Endpoints() Endpoints { return c.ep }

// hostCAs reads the @cert-authority lines of a known_hosts file.
func hostCAs(b []byte) ([]ssh.PublicKey, error) {
	var cas []ssh.PublicKey
	for len(bytes.TrimSpace(b)) > 0 {
		marker, _, key, _, rest, err := ssh.ParseKnownHosts(b)
		if err != nil {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
		if marker == "cert-authority" {
			cas = append(cas, key)
		}
		b = rest
	}
	if len(cas) == 0 {
		return nil, errors.New("known_hosts names no host CA; run postern login again")
	}
	return cas, nil
}

// StaticCaller acts with a certificate and key held in memory.
type StaticCaller struct {
	// Cert is the user certificate and Key the key it certifies.
	Cert *ssh.Certificate
	Key  ssh.Signer
	// Where is where the bastion is.
	Where Endpoints
}

// Credentials implements Caller.
func (c *StaticCaller) Credentials(context.Context) (*ssh.Certificate, ssh.Signer, error) {
	if c.Cert == nil || c.Key == nil {
		return nil, nil, errors.New("no credentials")
	}
	return c.Cert, c.Key, nil
}

// Endpoints implements Caller.
func (c *StaticCaller) Endpoints() Endpoints { return c.Where }

// hostChecker verifies host certificates from cas for the name dialled.
func hostChecker(cas []ssh.PublicKey) ssh.HostKeyCallback {
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		for _, ca := range cas {
			if bytes.Equal(ca.Marshal(), k.Marshal()) {
				return true
			}
		}
		return false
	}}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if _, ok := key.(*ssh.Certificate); !ok {
			return errors.New("the bastion offered no host certificate")
		}
		return checker.CheckHostKey(hostname, remote, key)
	}
}
