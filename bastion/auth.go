package bastion

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// Auth failure codes beside the certs.CodeCert* codes of CheckUserCert.
const (
	codeCertRequired          = "cert_required"
	codeCertRevoked           = "cert_revoked"
	codeRevocationUnavailable = "revocation_unavailable"
	codeLocked                = "locked"
	codeLocksUnavailable      = "locks_unavailable"
	// codeNoAuth counts a handshake that reached authentication and ended
	// without it, and without any key verifyKey refused (the client gave
	// up, offered keys it never proved, or ran out of time or tries).
	codeNoAuth = "no_auth"
)

// revocationTimeout bounds one revocation lookup during authentication.
const revocationTimeout = 5 * time.Second

// serverConfig returns the x/crypto configuration of one connection: the
// current host keys and auth callbacks bound to c. Only public key
// authentication is offered; no banner is ever sent. The key exchange is
// done when PreAuthConnCallback runs: from then on a handshake that ends
// without authenticating counts against the source's penalty.
func (c *serverConn) serverConfig() (*ssh.ServerConfig, error) {
	signers, err := c.s.hostSigners()
	if err != nil {
		return nil, err
	}
	conf := &ssh.ServerConfig{
		ServerVersion:             "SSH-2.0-postern",
		MaxAuthTries:              6,
		PublicKeyCallback:         c.offerKey,
		VerifiedPublicKeyCallback: c.verifyKey,
		PreAuthConnCallback:       func(ssh.ServerPreAuthConn) { c.authStarted = true },
	}
	for _, sg := range signers {
		conf.AddHostKey(sg)
	}
	return conf, nil
}

// offerKey answers a client that offers a key. It decides nothing and
// records nothing: x/crypto may call it for keys the client never proves it
// holds (CVE-2024-45337), so every key is provisionally acceptable and the
// decision waits for verifyKey, which runs only after the client's signature
// with that key has been checked.
func (c *serverConn) offerKey(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
	return &ssh.Permissions{}, nil
}

// verifyKey decides authentication for a key the client proved it holds:
// it must be a user certificate that CheckUserCert accepts for the login and
// source address, and whose serial is not revoked. Every outcome is audited
// and every failure counted. On success it creates the connection's ConnInfo
// and ties it to the connection through the extConnID extension.
//
// The first refused key of a connection counts one failure against the
// source's penalty (penalty.go), before the client learns of the refusal;
// further refused keys of the same connection are audited but not counted
// again, so a connection is one failure however many keys it tries. A
// connection that then authenticates takes its failure back (forgive): an
// agent offering plain keys before the certificate does not add up to a
// penalty. It never clears failures of other connections from the same
// source. A store that cannot answer the revocation lookup is postern's
// failure, not the client's, and is not counted.
func (c *serverConn) verifyKey(cm ssh.ConnMetadata, key ssh.PublicKey, _ *ssh.Permissions, _ string) (*ssh.Permissions, error) {
	s := c.s
	now := s.now()
	details := map[string]any{
		"conn":        c.id,
		"login":       cm.User(),
		"fingerprint": ssh.FingerprintSHA256(key),
		"key_type":    key.Type(),
	}
	fail := func(code string, cause error) (*ssh.Permissions, error) {
		details["reason"] = code
		s.metrics.authFailures.WithLabelValues(code).Inc()
		s.audit(c.ctx, c.log, state.Event{
			Type: state.EventAuthFailure, Source: c.remote.Addr().String(), Details: details,
		})
		c.log.Info("auth failure", "reason", code, "login", cm.User(), "err", cause)
		switch {
		case code == codeRevocationUnavailable, code == codeLocksUnavailable:
			c.serverFault = true
		case !c.failCounted:
			c.failCounted = true
			s.countAuthFailure(c)
		}
		return nil, fmt.Errorf("auth %s: %w", code, cause)
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return fail(codeCertRequired, errors.New("plain public key"))
	}
	details["serial"] = strconv.FormatUint(cert.Serial, 10)
	details["key_id"] = cert.KeyId
	details["fingerprint"] = ssh.FingerprintSHA256(cert.Key)
	id, err := s.opts.Authority.CheckUserCert(cert, cm.User(), c.remote.Addr(), now)
	if err != nil {
		code := "cert_invalid"
		if ce := usererr.As(err); ce != nil {
			code = ce.Code
		}
		return fail(code, err)
	}
	if s.opts.Revocations != nil {
		ctx, cancel := context.WithTimeout(c.ctx, revocationTimeout)
		revoked, err := s.opts.Revocations.IsRevoked(ctx, cert.Serial)
		cancel()
		if err != nil {
			// Fail closed: a certificate that cannot be checked is refused.
			return fail(codeRevocationUnavailable, err)
		}
		if revoked {
			return fail(codeCertRevoked, errors.New("serial revoked"))
		}
	}
	if s.opts.Locks != nil {
		// Read fresh: a lock made on another replica a moment ago holds here.
		ctx, cancel := context.WithTimeout(c.ctx, revocationTimeout)
		err := s.opts.Locks.CheckFresh(ctx, lock.Subject{Identity: id, Conn: c.id})
		cancel()
		if err != nil {
			code, msg := codeLocksUnavailable, "postern: cannot check locks; try again"
			if ue := usererr.As(err); ue != nil {
				if ue.Code == lock.CodeLocked {
					code = codeLocked
				}
				msg = "postern: " + ue.Msg
			}
			_, ferr := fail(code, err)
			// The one refusal the client is told about: its certificate is
			// good, and the person behind it should learn why it stopped.
			return nil, &ssh.BannerError{Err: ferr, Message: msg + "\r\n"}
		}
	}
	var expires time.Time
	if cert.ValidBefore != ssh.CertTimeInfinity && cert.ValidBefore <= 1<<62 {
		expires = time.Unix(int64(cert.ValidBefore), 0)
	}
	c.ci = &ConnInfo{
		ID:       c.id,
		Identity: id,
		Cert:     cert,
		Key:      cert.Key,
		Login:    cm.User(),
		Remote:   c.remote,
		Expires:  expires,
		Log:      c.log.With("identity", id.Username, "login", cm.User()),
	}
	if c.failCounted {
		s.penalty.forgive(c.remote.Addr())
		c.failCounted = false
	}
	details["issuer"] = id.Issuer
	details["identity_key"] = id.Key()
	details["expires"] = expires.UTC().Format(time.RFC3339)
	s.audit(c.ctx, c.log, state.Event{
		Type: state.EventAuthSuccess, Actor: id.Username, Source: c.remote.Addr().String(), Details: details,
	})
	return &ssh.Permissions{Extensions: map[string]string{extConnID: c.id}}, nil
}
