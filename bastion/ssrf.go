package bastion

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/policy"
)

// Resolver resolves destination names outside the inventory. *net.Resolver
// implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// resolveTimeout bounds one DNS lookup for a forward.
const resolveTimeout = 5 * time.Second

// Denial codes of the SSRF guard, in audit events.
const (
	codeBadHost      = "bad_host"
	codeResolve      = "resolve_failed"
	codeLoopback     = netguard.CodeLoopback
	codeUnspecified  = netguard.CodeUnspecified
	codeLinkLocal    = netguard.CodeLinkLocal
	codeMetadata     = netguard.CodeMetadata
	codeMulticast    = netguard.CodeMulticast
	codeOwnListener  = netguard.CodeOwnListener
	codeDestNotAllow = policy.CodeNotInAllowList
)

// guardError is a refused destination: code for the audit event and the
// address that was refused.
type guardError struct {
	code string
	addr netip.Addr
	err  error
}

func (e *guardError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s %s: %v", e.code, e.addr, e.err)
	}
	return fmt.Sprintf("%s %s", e.code, e.addr)
}

func (e *guardError) Unwrap() error { return e.err }

// guardDest turns host (as the client typed it) and port into the addresses
// a forward may dial, or a *guardError. Numeric spellings are parsed here
// (netguard.ParseHost); a well-known cloud metadata host name is refused
// without a lookup; any other name is resolved once and every address it
// resolves to must pass, so the caller dials the checked addresses and never
// the name (a DNS answer that changes between check and dial cannot win).
// Each address must be covered by a role's forwarding.allow; special ranges
// (loopback, unspecified, link-local, metadata, multicast, in any IPv6 form
// carrying them) need an allow prefix inside that range; the bastion's own
// listeners are refused whatever the roles allow.
func (s *Server) guardDest(ctx context.Context, eng *policy.Engine, id certs.Identity, host string, port int) ([]netip.Addr, policy.Decision, error) {
	var addrs []netip.Addr
	if ip, ok := netguard.ParseHost(host); ok {
		addrs = []netip.Addr{ip}
	} else {
		if !netguard.ValidDNSName(host) {
			return nil, policy.Decision{}, &guardError{code: codeBadHost}
		}
		if netguard.MetadataName(host) {
			return nil, policy.Decision{}, &guardError{code: codeMetadata}
		}
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		res, err := s.resolver.LookupNetIP(rctx, "ip", host)
		if err != nil || len(res) == 0 {
			if err == nil {
				err = errors.New("no addresses")
			}
			return nil, policy.Decision{}, &guardError{code: codeResolve, err: err}
		}
		for _, a := range res {
			addrs = append(addrs, a.Unmap().WithZone(""))
		}
	}
	var dec policy.Decision
	for i, ip := range addrs {
		d := eng.AllowForward(id, ip, port)
		if !d.Allow {
			return nil, d, &guardError{code: d.Code, addr: ip}
		}
		if sp, ok := netguard.Classify(ip); ok && !sp.Covers(d.Prefix) {
			return nil, d, &guardError{code: sp.Code, addr: ip}
		}
		if s.own.Reaches(ip, port) {
			return nil, d, &guardError{code: codeOwnListener, addr: ip}
		}
		if i == 0 {
			dec = d
		}
	}
	return addrs, dec, nil
}
