package login

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
)

// BastionEnv is the environment variable client commands read the bastion
// URL from when --bastion is not given.
const BastionEnv = "POSTERN_BASTION"

// APIClient calls the bastion's HTTP API as the user of a login profile.
// Every request is signed with the profile's key and certificate (the
// Postern-SSH scheme of [certs.APIAuthScheme]), so no token is ever stored
// on disk: the certificate that `postern login` wrote is the credential.
// An APIClient is safe for concurrent use.
type APIClient struct {
	// Base is the bastion's API base URL, without a trailing slash.
	Base string
	// Profile is the login profile whose certificate signs the requests.
	Profile *Profile

	hc     *http.Client
	cert   *ssh.Certificate
	signer ssh.Signer
	now    func() time.Time
}

// APIClientOptions configures NewAPIClient. The zero value works.
type APIClientOptions struct {
	// Bastion overrides the profile's bastion URL (--bastion,
	// $POSTERN_BASTION); the profile's if empty.
	Bastion string
	// HTTPClient sends the requests; a client without an overall timeout
	// (streams may be long) if nil.
	HTTPClient *http.Client
	// Now is the clock used for signatures; time.Now if nil.
	Now func() time.Time
}

// OpenAPIClient finds the profile the way every client command does
// (--dir, else the default directory of --bastion or $POSTERN_BASTION, else
// the only profile) and returns a client for it.
func OpenAPIClient(bastion, dir string, opts APIClientOptions) (*APIClient, error) {
	if bastion == "" {
		bastion = os.Getenv(BastionEnv)
	}
	p, err := FindProfile(bastion, dir)
	if err != nil {
		return nil, err
	}
	if opts.Bastion == "" {
		opts.Bastion = bastion
	}
	return NewAPIClient(p, opts)
}

// NewAPIClient returns a client that signs with p's key and certificate.
func NewAPIClient(p *Profile, opts APIClientOptions) (*APIClient, error) {
	base := opts.Bastion
	if base == "" {
		base = p.Bastion
	}
	u, err := parseBastionURL(base)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	key, err := ssh.ParsePrivateKey(kb)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", p.KeyFile, err)
	}
	cert, err := readCert(p.CertFile)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()) {
		return nil, fmt.Errorf("profile %s: the certificate is not for its key; run postern login", p.Dir)
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &APIClient{
		Base:    strings.TrimRight(u.String(), "/"),
		Profile: p,
		hc:      hc,
		cert:    cert,
		signer:  key,
		now:     now,
	}, nil
}

// NewRequest builds a request for path (with its query, e.g.
// "/v1/sessions?user=bob") relative to the base URL. It is signed by Do.
func (c *APIClient) NewRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("api path %q must start with /", path)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	return req, nil
}

// Do signs req and sends it. A non-2xx answer is returned as a
// *ServerError (the body is consumed and closed); otherwise the caller owns
// the response body.
func (c *APIClient) Do(req *http.Request) (*http.Response, error) {
	if c.Profile != nil && !c.Profile.Valid(c.now()) {
		return nil, errors.New("your postern certificate has expired; run postern login")
	}
	if err := certs.SignAPIRequest(req, c.cert, c.signer, c.now()); err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		return nil, decodeServerError(resp, body)
	}
	return resp, nil
}

// GetJSON GETs path and decodes the JSON answer into out.
func (c *APIClient) GetJSON(ctx context.Context, path string, out any) error {
	req, err := c.NewRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	return c.doJSON(req, out, 64<<20)
}

// PostJSON POSTs body as JSON to path and decodes the JSON answer into out.
func (c *APIClient) PostJSON(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	req, err := c.NewRequest(ctx, http.MethodPost, path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.doJSON(req, out, 1<<20)
}

// doJSON sends req and decodes at most limit bytes of JSON answer into out.
func (c *APIClient) doJSON(req *http.Request, out any, limit int64) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(out); err != nil {
		return fmt.Errorf("decode answer from %s: %w", req.URL.Path, err)
	}
	return nil
}

// Query builds "path?k=v&…" from the non-empty values of q, in a stable
// order, for NewRequest and GetJSON. q is not modified.
func Query(path string, q url.Values) string {
	kept := url.Values{}
	for k, vs := range q {
		for _, v := range vs {
			if v != "" {
				kept.Add(k, v)
			}
		}
	}
	if len(kept) == 0 {
		return path
	}
	return path + "?" + kept.Encode()
}

// NewCertAPIClient returns a client for the API at base that signs with cert
// and its key: for callers that hold a certificate in memory rather than in
// a profile (postern's own MCP endpoint, which acts for the identity it
// authenticated with a certificate it minted for it).
func NewCertAPIClient(base string, cert *ssh.Certificate, key ssh.Signer, opts APIClientOptions) (*APIClient, error) {
	u, err := parseBastionURL(base)
	if err != nil {
		return nil, err
	}
	if cert == nil || key == nil || !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()) {
		return nil, errors.New("api client: the certificate is not for the key")
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &APIClient{Base: strings.TrimRight(u.String(), "/"), hc: hc, cert: cert, signer: key, now: now}, nil
}
