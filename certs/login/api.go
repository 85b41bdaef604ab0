package login

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// maxResponse bounds what the client reads from the bastion's API.
const maxResponse = 1 << 20

// BastionConfig is the body of GET /v1/config.
type BastionConfig struct {
	// Issuers are the OIDC issuers the bastion trusts.
	Issuers []IssuerInfo `json:"issuers"`
	// SSHAddress is the host:port clients dial for SSH.
	SSHAddress string `json:"ssh_address"`
	// HostCA is the known_hosts line that trusts the host CA.
	HostCA string `json:"host_ca"`
	// PublicURL is the bastion's HTTP API URL.
	PublicURL string `json:"public_url"`
}

// IssuerInfo describes one issuer in GET /v1/config.
type IssuerInfo struct {
	// Name identifies the issuer.
	Name string `json:"name"`
	// IssuerURL is the OIDC issuer URL (discovery base).
	IssuerURL string `json:"issuer_url"`
	// ClientID is the public OAuth client for interactive login.
	ClientID string `json:"client_id"`
	// Scopes to request; "openid email profile" if empty.
	Scopes []string `json:"scopes"`
	// Kind is human or agent.
	Kind string `json:"kind"`
	// Dev reports whether this is the bastion's embedded development issuer,
	// which approves every authorization request.
	Dev bool `json:"dev"`
	// Protocol is "saml" for a SAML identity provider (ProtocolSAML); empty
	// for OIDC.
	Protocol string `json:"protocol,omitempty"`
	// LoginURL starts a SAML login at the bastion.
	LoginURL string `json:"login_url,omitempty"`
	// DisplayName is a SAML provider's name for people.
	DisplayName string `json:"display_name,omitempty"`
}

// certRequest is the body of POST /v1/certs.
type certRequest struct {
	PublicKey string `json:"public_key"`
	TTL       string `json:"ttl,omitempty"`
}

// CertResponse is the body of a successful POST /v1/certs.
type CertResponse struct {
	// Certificate is the user certificate in authorized_keys format.
	Certificate string `json:"certificate"`
	// ValidAfter is the start of validity.
	ValidAfter time.Time `json:"valid_after"`
	// ValidBefore is the end of validity.
	ValidBefore time.Time `json:"valid_before"`
	// Principals are the certificate's principals.
	Principals []string `json:"principals"`
	// Serial is the certificate serial, as the server formats it.
	Serial json.RawMessage `json:"serial"`
	// HostCA is the known_hosts line that trusts the host CA.
	HostCA string `json:"host_ca"`
}

// ServerError is an error answer from the bastion's API. Its message is the
// server's short human text and stable code; it never contains a token.
type ServerError struct {
	// Status is the HTTP status.
	Status int
	// Msg is the server's human message.
	Msg string
	// Code is the server's stable machine code.
	Code string
}

// Error returns "<message> (<code>)", the form postern login prints.
func (e *ServerError) Error() string {
	if e.Code == "" {
		return e.Msg
	}
	return e.Msg + " (" + e.Code + ")"
}

// apiClient talks to the bastion's HTTP API.
type apiClient struct {
	base string // no trailing slash
	hc   *http.Client
}

// fetchConfig reads GET /v1/config.
func (c *apiClient) fetchConfig(ctx context.Context) (*BastionConfig, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/config", nil)
	if err != nil {
		return nil, fmt.Errorf("build config request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	var cfg BastionConfig
	if err := c.do(req, &cfg); err != nil {
		return nil, wrapUnlessServer("fetch the bastion's configuration", err)
	}
	return &cfg, nil
}

// requestCert POSTs the public key to /v1/certs with idToken as the bearer.
func (c *apiClient) requestCert(ctx context.Context, idToken, publicKey string, ttl time.Duration) (*CertResponse, error) {
	body := certRequest{PublicKey: publicKey}
	if ttl > 0 {
		body.TTL = ttl.String()
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode certificate request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/certs", bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("build certificate request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+idToken)
	var cr CertResponse
	if err := c.do(req, &cr); err != nil {
		return nil, wrapUnlessServer("request a certificate", err)
	}
	if cr.Certificate == "" {
		return nil, errors.New("request certificate: the bastion answered without a certificate")
	}
	return &cr, nil
}

// wrapUnlessServer adds context to transport and decoding errors; the
// bastion's own errors are returned as they are, to be shown as
// "<message> (<code>)".
func wrapUnlessServer(what string, err error) error {
	var se *ServerError
	if errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// do sends req and decodes a JSON answer into out, or returns a *ServerError.
func (c *apiClient) do(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL error names the bastion URL, which the user typed; it holds
		// no credential (the token travels in a header).
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return decodeServerError(resp, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode answer from %s: %w", req.URL.Path, err)
	}
	return nil
}

// decodeServerError turns an error answer into a *ServerError, falling back to
// the HTTP status when the body is not the API's JSON error shape (a proxy's
// HTML page, say), whose text is not shown.
func decodeServerError(resp *http.Response, body []byte) error {
	se := &ServerError{Status: resp.StatusCode}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var e struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if (mt == "application/json" || strings.HasPrefix(strings.TrimSpace(string(body)), "{")) &&
		json.Unmarshal(body, &e) == nil && e.Error != "" {
		se.Msg, se.Code = e.Error, e.Code
		return se
	}
	se.Msg = fmt.Sprintf("the bastion answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	se.Code = "http_" + fmt.Sprint(resp.StatusCode)
	return se
}
