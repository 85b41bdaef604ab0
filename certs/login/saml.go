package login

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/posternhq/postern/certs"
)

// ProtocolSAML marks a SAML identity provider in GET /v1/config.
const ProtocolSAML = "saml"

// samlToken runs a SAML login in the browser: the bastion's service
// provider sends the browser to the identity provider and back to a
// loopback listener (RFC 8252 §7.3) with a one-time code, which becomes
// the bearer token of POST /v1/certs together with the PKCE verifier that
// started the login (certs.LoginCodeToken). The code alone is useless to
// another local program that catches it.
func samlToken(ctx context.Context, o *Options, iss IssuerInfo) (string, error) {
	if iss.LoginURL == "" {
		return "", fmt.Errorf("the bastion lists SAML provider %q without a login URL", iss.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, interactiveTimeout)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the login callback: %w", err)
	}
	redirect := "http://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/callback"
	state, verifier := randomString()[:32], randomString()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"redirect_uri": {redirect}, "state": {state},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	sep := "?"
	if strings.Contains(iss.LoginURL, "?") {
		sep = "&"
	}
	authURL := iss.LoginURL + sep + q.Encode()

	cb := newCallback(state)
	defer serveCallback(ln, cb)()
	name := iss.DisplayName
	if name == "" {
		name = iss.Name
	}
	fmt.Fprintf(o.Err, "To sign in with %s, open this URL in a browser on this machine:\n\n  %s\n\n", name, authURL)
	if !o.NoBrowser {
		if err := openBrowser(o, authURL); err == nil {
			fmt.Fprintln(o.progress(), "A browser window should have opened; waiting for the sign-in to finish.")
		}
	}
	res, err := awaitCallback(ctx, cb)
	if err != nil {
		return "", err
	}
	// The code is redeemed by POST /v1/certs; the page can say so now.
	res.reply <- nil
	return certs.LoginCodeToken(res.code, verifier), nil
}
