package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/mcpserver"
)

// mcpCertTTL is the lifetime of the certificates the MCP endpoint issues
// for its callers, and mcpCertRenew how long before expiry one is replaced.
const (
	mcpCertTTL   = 10 * time.Minute
	mcpCertRenew = 2 * time.Minute
)

// mcpCallers returns the MCP endpoint's callers: an identity the API
// authenticated acts through the bastion's own listeners with a short
// certificate the issuance pipeline gives it (IssueFor, via "mcp": its
// locks, roles and rate limit apply), never with any privilege of postern's.
func mcpCallers(issuer *certs.Issuer, authority *certs.Authority, sshAddr, httpAddr net.Addr, publicURL string, trustedProxies []netip.Prefix) func(context.Context, *http.Request, certs.Identity) (mcpserver.Caller, error) {
	ep := mcpserver.Endpoints{
		SSHAddress: dialable(sshAddr), HostCAs: authority.Host.Trusted(),
		API: "http://" + dialable(httpAddr), PublicURL: publicURL,
	}
	return func(_ context.Context, r *http.Request, id certs.Identity) (mcpserver.Caller, error) {
		return &mintedCaller{issuer: issuer, id: id, source: httpx.ClientAddr(r, trustedProxies), ep: ep}, nil
	}
}

// dialable is a listener's address as this process dials it: an
// unspecified host (":2222") becomes loopback.
func dialable(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	ip := ap.Addr()
	if ip.IsUnspecified() {
		ip = netip.MustParseAddr("127.0.0.1")
		if ap.Addr().Is6() && !ap.Addr().Is4In6() {
			ip = netip.IPv6Loopback()
		}
	}
	return netip.AddrPortFrom(ip, ap.Port()).String()
}

// mintedCaller is one identity of the MCP endpoint, with the certificate
// the bastion issued it (renewed shortly before it expires).
type mintedCaller struct {
	issuer *certs.Issuer
	id     certs.Identity
	source netip.Addr
	ep     mcpserver.Endpoints

	mu   sync.Mutex
	cert *ssh.Certificate
	key  ssh.Signer
}

// Credentials implements mcpserver.Caller.
func (c *mintedCaller) Credentials(ctx context.Context) (*ssh.Certificate, ssh.Signer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && time.Until(time.Unix(int64(c.cert.ValidBefore), 0)) > mcpCertRenew {
		return c.cert, c.key, nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	iss, err := c.issuer.IssueFor(ctx, c.id, certs.Request{PublicKey: key.PublicKey(), TTL: mcpCertTTL, Source: c.source}, "mcp")
	if err != nil {
		return nil, nil, err
	}
	c.cert, c.key = iss.Cert, key
	return c.cert, c.key, nil
}

// Endpoints implements mcpserver.Caller.
func (c *mintedCaller) Endpoints() mcpserver.Endpoints { return c.ep }
