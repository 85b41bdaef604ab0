package certs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/usererr"
	"golang.org/x/crypto/ssh"
)

// MaxRequestBody is the largest accepted POST /v1/certs body.
const MaxRequestBody = 64 << 10

// HandlerOptions configures the POST /v1/certs handler. The zero value is
// ready to use.
type HandlerOptions struct {
	// TrustedProxies are the proxies in front of postern (http.trusted_proxies)
	// whose X-Forwarded-For hops are believed when finding the client's
	// address for per-source rate limits and audit events
	// (httpx.ClientAddr); none if empty: the peer address is the client's.
	TrustedProxies []netip.Prefix
}

// CertRequest is the JSON body of POST /v1/certs.
type CertRequest struct {
	// PublicKey is an authorized_keys line.
	PublicKey string `json:"public_key"`
	// TTL optionally shortens the lifetime ("10m").
	TTL string `json:"ttl,omitempty"`
}

// CertResponse is the JSON answer of POST /v1/certs.
type CertResponse struct {
	// Certificate is the user certificate in authorized_keys format.
	Certificate string `json:"certificate"`
	// ValidAfter and ValidBefore are RFC 3339 times.
	ValidAfter  string `json:"valid_after"`
	ValidBefore string `json:"valid_before"`
	// Principals are the logins the certificate names.
	Principals []string `json:"principals"`
	// Serial is the certificate's serial number.
	Serial uint64 `json:"serial"`
	// HostCA is the known_hosts @cert-authority line(s) for postern's host CA.
	HostCA string `json:"host_ca"`
}

// Handler returns the http.Handler for POST /v1/certs (the caller mounts it
// at that path): a bearer ID token in Authorization, a JSON CertRequest body
// of at most 64 KiB, answered with a CertResponse or an httpx.ErrorBody.
func (i *Issuer) Handler(opts HandlerOptions) http.Handler {
	return &certHandler{issuer: i, opts: opts}
}

type certHandler struct {
	issuer *Issuer
	opts   HandlerOptions
}

func (h *certHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, r, &usererr.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Msg: "use POST"})
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.fail(w, r, &usererr.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Msg: "send Content-Type: application/json"})
		return
	}
	token, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="postern"`)
		h.fail(w, r, &usererr.Error{Status: http.StatusUnauthorized, Code: CodeTokenMissing,
			Msg: "missing bearer token in Authorization"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, r, &usererr.Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
				Msg: "request body exceeds 64 KiB"})
			return
		}
		h.fail(w, r, &usererr.Error{Code: "bad_request", Msg: "could not read request body", Err: err})
		return
	}
	var req CertRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		h.fail(w, r, &usererr.Error{Code: "bad_request", Msg: "body must be a JSON object with public_key and optional ttl", Err: err})
		return
	}
	if dec.More() {
		h.fail(w, r, &usererr.Error{Code: "bad_request", Msg: "body must hold exactly one JSON object"})
		return
	}
	pub, err := ParsePublicKey(req.PublicKey)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			h.fail(w, r, &usererr.Error{Code: CodeBadTTL, Msg: "ttl must be a positive duration such as 10m", Err: err})
			return
		}
	}
	issued, err := h.issuer.Issue(r.Context(), Request{
		Token:     token,
		PublicKey: pub,
		TTL:       ttl,
		Source:    httpx.ClientAddr(r, h.opts.TrustedProxies),
	})
	if err != nil {
		httpx.WriteError(w, r, h.issuer.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, CertResponse{
		Certificate: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(issued.Cert))),
		ValidAfter:  issued.ValidAfter.UTC().Format(time.RFC3339),
		ValidBefore: issued.ValidBefore.UTC().Format(time.RFC3339),
		Principals:  issued.Principals,
		Serial:      issued.Serial,
		HostCA:      h.issuer.authority.HostCALine(),
	})
}

// fail answers a request refused before the pipeline ran, counting it in
// postern_cert_requests_failed_total like the pipeline's own refusals.
func (h *certHandler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if e := usererr.As(err); e != nil {
		h.issuer.failed.WithLabelValues(e.Code).Inc()
	}
	httpx.WriteError(w, r, h.issuer.log, err)
}

// bearerToken extracts the token of an "Authorization: Bearer <token>" header.
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
