package certs

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/usererr"
	"golang.org/x/crypto/ssh"
)

// APIAuthScheme is the Authorization scheme of requests signed with a
// postern user certificate's key.
//
//	Authorization: Postern-SSH cert="<base64 cert>", ts="<unix seconds>", sig="<base64 ssh.Signature>"
//
// The signature is made with the certificate's private key over
// [APISignedData] of the request's method, request URI and ts.
const APIAuthScheme = "Postern-SSH"

// apiSignaturePrefix starts the signed data; the version lets the scheme
// change without a signature of one version being replayed as another.
const apiSignaturePrefix = "postern-api-v1\n"

// DefaultAPIMaxSkew is how far a signed request's timestamp may be from the
// server's clock.
const DefaultAPIMaxSkew = 5 * time.Minute

// Codes returned by APIAuth.Authenticate in *usererr.Error (all with status 401).
const (
	CodeAuthRequired = "auth_required"
	CodeAuthInvalid  = "auth_invalid"
	CodeAuthExpired  = "auth_expired"
	CodeAuthRevoked  = "auth_revoked"
)

// APISignedData returns the bytes a client signs for a request: the scheme
// version, the method, the request URI (path and raw query, exactly as sent)
// and the timestamp, one per line.
func APISignedData(method, requestURI, ts string) []byte {
	return []byte(apiSignaturePrefix + method + "\n" + requestURI + "\n" + ts)
}

// SignAPIRequest adds a Postern-SSH Authorization header to req, signed by
// signer (the private key) for cert (the user certificate of that key) at
// time now.
func SignAPIRequest(req *http.Request, cert *ssh.Certificate, signer ssh.Signer, now time.Time) error {
	if cert == nil || signer == nil {
		return errors.New("sign api request: missing certificate or key")
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	data := APISignedData(req.Method, req.URL.RequestURI(), ts)
	var sig *ssh.Signature
	var err error
	// RSA keys must not sign with SHA-1; every other key type has one algorithm.
	if as, ok := signer.(ssh.AlgorithmSigner); ok && signer.PublicKey().Type() == ssh.KeyAlgoRSA {
		sig, err = as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA256)
	} else {
		sig, err = signer.Sign(rand.Reader, data)
	}
	if err != nil {
		return fmt.Errorf("sign api request: %w", err)
	}
	req.Header.Set("Authorization", fmt.Sprintf(`%s cert="%s", ts="%s", sig="%s"`, APIAuthScheme,
		base64.StdEncoding.EncodeToString(cert.Marshal()), ts,
		base64.StdEncoding.EncodeToString(ssh.Marshal(sig))))
	return nil
}

// APIAuth authenticates HTTP API requests. A request proves its identity in
// one of two ways:
//
//   - "Authorization: Postern-SSH …" (see [APIAuthScheme]): a user
//     certificate issued by postern and a fresh signature with its key, the
//     way every client command authenticates with the profile that
//     `postern login` wrote, without storing a token on disk;
//   - "Authorization: Bearer <OIDC ID token>", verified by Verifier.
//
// The zero value refuses everything; set Authority and/or Verifier. An
// APIAuth is safe for concurrent use once configured.
type APIAuth struct {
	// Authority checks user certificates; certificate authentication is
	// refused if nil.
	Authority *Authority
	// Verifier verifies bearer ID tokens; bearer authentication is refused
	// if nil.
	Verifier TokenVerifier
	// Revoked reports whether a certificate serial has been revoked; no
	// revocation check if nil. An error fails closed.
	Revoked func(serial uint64) (bool, error)
	// Locked refuses an authenticated identity that a lock matches (the
	// kill switch, lock.Locker.Check): its error, a *usererr.Error, is the
	// answer. No lock check if nil.
	Locked func(Identity) error
	// MaxSkew bounds |now − ts| of a signed request; DefaultAPIMaxSkew if zero.
	MaxSkew time.Duration
	// TrustedProxies are the proxies in front of postern whose
	// X-Forwarded-For hops are believed when finding the client's address
	// (for source-address certificate options; httpx.ClientAddr); none if
	// empty: the peer address is the client's.
	TrustedProxies []netip.Prefix
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

func authErr(code, msg string, err error) *usererr.Error {
	return &usererr.Error{Status: http.StatusUnauthorized, Code: code, Msg: msg, Err: err}
}

// Authenticate returns the identity that r proves, or an *usererr.Error with status
// 401 and code auth_required (no credentials), auth_invalid (malformed,
// foreign CA, bad signature, wrong key), auth_expired (certificate, token or
// timestamp out of date) or auth_revoked; or, for an identity a lock
// matches, Locked's refusal (403, code locked).
func (a *APIAuth) Authenticate(r *http.Request) (Identity, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Identity{}, authErr(CodeAuthRequired, "authentication required", nil)
	}
	scheme, rest, _ := strings.Cut(h, " ")
	var id Identity
	var err error
	switch {
	case strings.EqualFold(scheme, APIAuthScheme):
		id, err = a.certAuth(r, rest)
	case strings.EqualFold(scheme, "Bearer"):
		id, err = a.bearerAuth(r.Context(), strings.TrimSpace(rest))
	default:
		return Identity{}, authErr(CodeAuthRequired, "authentication required", fmt.Errorf("unsupported scheme %q", printable(scheme)))
	}
	if err == nil && a.Locked != nil {
		if lerr := a.Locked(id); lerr != nil {
			return Identity{}, lerr
		}
	}
	return id, err
}

func (a *APIAuth) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *APIAuth) bearerAuth(ctx context.Context, token string) (Identity, error) {
	if a.Verifier == nil {
		return Identity{}, authErr(CodeAuthInvalid, "bearer tokens are not accepted here", nil)
	}
	if token == "" {
		return Identity{}, authErr(CodeAuthRequired, "authentication required", nil)
	}
	id, err := a.Verifier.Verify(ctx, token)
	if err != nil {
		code := CodeAuthInvalid
		msg := "invalid token"
		if e := usererr.As(err); e != nil && strings.Contains(e.Code, "expired") {
			code, msg = CodeAuthExpired, "token has expired"
		}
		return Identity{}, authErr(code, msg, err)
	}
	return id, nil
}

func (a *APIAuth) certAuth(r *http.Request, params string) (Identity, error) {
	if a.Authority == nil {
		return Identity{}, authErr(CodeAuthInvalid, "certificate authentication is not accepted here", nil)
	}
	p, err := parseAuthParams(params)
	if err != nil {
		return Identity{}, authErr(CodeAuthInvalid, "malformed authorization header", err)
	}
	certBytes, err1 := base64.StdEncoding.DecodeString(p["cert"])
	sigBytes, err2 := base64.StdEncoding.DecodeString(p["sig"])
	ts, err3 := strconv.ParseInt(p["ts"], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Identity{}, authErr(CodeAuthInvalid, "malformed authorization header", err)
	}
	pub, err := ssh.ParsePublicKey(certBytes)
	if err != nil {
		return Identity{}, authErr(CodeAuthInvalid, "malformed certificate", err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return Identity{}, authErr(CodeAuthInvalid, "not a certificate", nil)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(sigBytes, sig); err != nil {
		return Identity{}, authErr(CodeAuthInvalid, "malformed signature", err)
	}
	now := a.now()
	skew := a.MaxSkew
	if skew <= 0 {
		skew = DefaultAPIMaxSkew
	}
	if d := now.Sub(time.Unix(ts, 0)); d > skew || d < -skew {
		return Identity{}, authErr(CodeAuthExpired, "request timestamp is too far from the server's clock", fmt.Errorf("skew %s", d))
	}
	// The login checked is the username principal: every certificate postern
	// issues names the username first.
	login := ""
	if len(cert.ValidPrincipals) > 0 {
		login = cert.ValidPrincipals[0]
	}
	if id, err := IdentityFromCert(cert); err == nil {
		login = id.Username
	}
	id, err := a.Authority.CheckUserCert(cert, login, httpx.ClientAddr(r, a.TrustedProxies), now)
	if err != nil {
		code, msg := CodeAuthInvalid, "invalid certificate"
		if e := usererr.As(err); e != nil {
			switch e.Code {
			case CodeCertExpired, CodeCertNotYetValid:
				code = CodeAuthExpired
			}
			msg = e.Msg
		}
		return Identity{}, authErr(code, msg, err)
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	if err := cert.Key.Verify(APISignedData(r.Method, uri, p["ts"]), sig); err != nil {
		return Identity{}, authErr(CodeAuthInvalid, "invalid request signature", err)
	}
	if a.Revoked != nil {
		revoked, err := a.Revoked(cert.Serial)
		if err != nil {
			return Identity{}, &usererr.Error{Status: http.StatusServiceUnavailable, Code: CodeAuthRevoked,
				Msg: "cannot check revocation; try again", Err: err}
		}
		if revoked {
			return Identity{}, authErr(CodeAuthRevoked, "certificate has been revoked", fmt.Errorf("serial %d", cert.Serial))
		}
	}
	return id, nil
}

// parseAuthParams parses `k="v", k2="v2"` auth-params. Each of cert, ts and
// sig must appear exactly once; other names are refused.
func parseAuthParams(s string) (map[string]string, error) {
	out := make(map[string]string, 3)
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, errors.New("auth-param without =")
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		switch k {
		case "cert", "ts", "sig":
		default:
			return nil, fmt.Errorf("unknown auth-param %q", printable(k))
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("duplicate auth-param %q", k)
		}
		out[k] = v
	}
	for _, k := range []string{"cert", "ts", "sig"} {
		if out[k] == "" {
			return nil, fmt.Errorf("missing auth-param %q", k)
		}
	}
	return out, nil
}
