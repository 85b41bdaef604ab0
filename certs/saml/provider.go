package saml

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlsp"
	dsig "github.com/russellhaering/goxmldsig"
	"golang.org/x/sync/singleflight"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
)

// Metadata refresh.
const (
	metadataRefresh    = 24 * time.Hour
	metadataMaxBytes   = 2 << 20
	metadataBackoffMin = time.Second
	metadataBackoffMax = 30 * time.Second
)

// provider is one configured identity provider. Its metadata (inline, or
// fetched on first use and refreshed every 24h; a failed refresh keeps the
// old metadata) makes the crewjam/saml ServiceProvider that validates its
// answers.
type provider struct {
	sp       *SP
	cfg      config.SAMLProvider
	entityID string
	acsURL   url.URL
	metaURL  url.URL
	loginURL string
	format   saml.NameIDFormat

	mu      sync.Mutex
	current *saml.ServiceProvider // with the provider's metadata; nil until loaded
	loaded  time.Time
	nextTry time.Time
	backoff time.Duration
	fetch   singleflight.Group
}

func newProvider(sp *SP, c config.SAMLProvider) (*provider, error) {
	if c.Name == "" || strings.ContainsAny(c.Name, "/?#%. ") {
		return nil, fmt.Errorf("name %q: use letters, digits, '_' and '-' only", c.Name)
	}
	if (c.MetadataURL == "") == (c.Metadata == "") {
		return nil, errors.New("set metadata_url or metadata")
	}
	p := &provider{sp: sp, cfg: c}
	base := sp.base + pathPrefix + c.Name
	meta, err := url.Parse(base + "/metadata")
	if err != nil {
		return nil, fmt.Errorf("name %q: %w", c.Name, err)
	}
	acs, _ := url.Parse(base + "/acs")
	p.metaURL, p.acsURL, p.loginURL = *meta, *acs, base+"/login"
	p.entityID = c.EntityID
	if p.entityID == "" {
		p.entityID = meta.String()
	}
	switch c.NameIDFormat {
	case "", "persistent":
		p.format = saml.PersistentNameIDFormat
	case "email":
		p.format = saml.EmailAddressNameIDFormat
	case "unspecified":
		p.format = saml.UnspecifiedNameIDFormat
	default:
		return nil, fmt.Errorf("name_id_format %q: want persistent, email or unspecified", c.NameIDFormat)
	}
	if c.Metadata != "" {
		md, err := samlsp.ParseMetadata([]byte(c.Metadata))
		if err != nil {
			return nil, fmt.Errorf("metadata: not SAML metadata of an identity provider: %w", err)
		}
		if err := checkIDPMetadata(md); err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		p.current, p.loaded = p.withMetadata(md), time.Now()
	}
	return p, nil
}

// base returns the ServiceProvider without the provider's metadata: what
// postern's own metadata is made from.
func (p *provider) base() *saml.ServiceProvider { return p.withMetadata(nil) }

// withMetadata returns the ServiceProvider that validates answers from the
// provider described by md. The choices, each deny-by-default:
// AuthnRequests signed with RSA-SHA256; answers only with the HTTP-POST
// binding, only in response to a request postern made (no IdP-initiated
// logins); SHA-1 signatures refused; no artifact resolution; the replay
// cache is postern's own (state.FinishLogin), in the same write as the end
// of the login.
func (p *provider) withMetadata(md *saml.EntityDescriptor) *saml.ServiceProvider {
	return &saml.ServiceProvider{
		EntityID:                         p.entityID,
		Key:                              p.sp.key,
		Certificate:                      p.sp.cert,
		MetadataURL:                      p.metaURL,
		AcsURL:                           p.acsURL,
		IDPMetadata:                      md,
		AuthnNameIDFormat:                p.format,
		SignatureMethod:                  dsig.RSASHA256SignatureMethod,
		AllowIDPInitiated:                false,
		RejectSHA1Signatures:             true,
		AssertionConsumerServiceBindings: []string{saml.HTTPPostBinding},
		LimitRelayStateLength:            true,
		HTTPClient:                       &http.Client{Timeout: 10 * time.Second, Transport: refuseTransport{}},
	}
}

// refuseTransport makes every request fail: the service provider never
// needs to contact the identity provider itself (no artifact resolution,
// attribute queries or SOAP logout).
type refuseTransport struct{}

func (refuseTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("postern's SAML service provider makes no back-channel requests")
}

// idpEntityID returns the provider's entity id, once its metadata is known.
func (p *provider) idpEntityID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil || p.current.IDPMetadata == nil {
		return ""
	}
	return p.current.IDPMetadata.EntityID
}

// serviceProvider returns the ServiceProvider with the provider's current
// metadata, fetching it on first use and when it is older than
// metadataRefresh (a failure keeps the old metadata; without any, calls
// fail fast until a backoff of 1 s doubling to 30 s has passed).
func (p *provider) serviceProvider(ctx context.Context) (*saml.ServiceProvider, error) {
	p.mu.Lock()
	cur, loaded, next := p.current, p.loaded, p.nextTry
	p.mu.Unlock()
	now := time.Now()
	if cur != nil && (p.cfg.MetadataURL == "" || now.Sub(loaded) < metadataRefresh || now.Before(next)) {
		return cur, nil
	}
	if cur == nil && now.Before(next) {
		return nil, errors.New("metadata unavailable (retrying after a backoff)")
	}
	ch := p.fetch.DoChan("fetch", func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		md, err := p.fetchMetadata(fctx)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			p.backoff = min(max(p.backoff*2, metadataBackoffMin), metadataBackoffMax)
			p.nextTry = time.Now().Add(p.backoff)
			p.sp.log.Warn("saml: fetching metadata failed", "provider", p.cfg.Name, "retry_in", p.backoff, "err", err)
			if p.current != nil {
				return p.current, nil // keep serving with the metadata we have
			}
			return nil, err
		}
		p.current, p.loaded, p.backoff, p.nextTry = p.withMetadata(md), time.Now(), 0, time.Time{}
		p.sp.log.Info("saml: metadata loaded", "provider", p.cfg.Name, "entity_id", md.EntityID)
		return p.current, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*saml.ServiceProvider), nil
	}
}

// fetchMetadata downloads and parses the provider's metadata.
func (p *provider) fetchMetadata(ctx context.Context) (*saml.EntityDescriptor, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.MetadataURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.sp.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get metadata: status %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, metadataMaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	if len(b) > metadataMaxBytes {
		return nil, fmt.Errorf("metadata is larger than %d bytes", metadataMaxBytes)
	}
	md, err := samlsp.ParseMetadata(b)
	if err != nil {
		return nil, fmt.Errorf("parse metadata: %w", err)
	}
	return md, checkIDPMetadata(md)
}

// checkIDPMetadata refuses metadata postern cannot validate answers with:
// no identity provider role, or no signing certificate.
func checkIDPMetadata(md *saml.EntityDescriptor) error {
	if len(md.IDPSSODescriptors) == 0 {
		return errors.New("no IDPSSODescriptor")
	}
	for _, d := range md.IDPSSODescriptors {
		for _, kd := range d.KeyDescriptors {
			if (kd.Use == "" || kd.Use == "signing") && len(kd.KeyInfo.X509Data.X509Certificates) > 0 {
				return nil
			}
		}
	}
	return errors.New("no signing certificate")
}

// identity maps a validated assertion to an identity: issuer = the
// provider's name, subject = the NameID (never transient), username = the
// username attribute (or the NameID), groups = the groups attribute's
// values; the required attributes must carry their values.
func (p *provider) identity(a *saml.Assertion) (certs.Identity, error) {
	refuse := func(msg string) error {
		return &usererr.Error{Code: CodeAssertionRefused, Msg: msg}
	}
	if a.Subject == nil || a.Subject.NameID == nil || strings.TrimSpace(a.Subject.NameID.Value) == "" {
		return certs.Identity{}, refuse("the assertion names no subject (NameID)")
	}
	nameID := a.Subject.NameID
	if nameID.Format == string(saml.TransientNameIDFormat) {
		return certs.Identity{}, refuse("the assertion's NameID is transient: ask the provider for a persistent or email NameID")
	}
	attrs := map[string][]string{}
	for _, st := range a.AttributeStatements {
		for _, at := range st.Attributes {
			var vals []string
			for _, v := range at.Values {
				if !v.Nil {
					vals = append(vals, v.Value)
				}
			}
			for _, k := range []string{at.Name, at.FriendlyName} {
				if k != "" {
					attrs[k] = append(attrs[k], vals...)
				}
			}
		}
	}
	username := nameID.Value
	if n := p.cfg.UsernameAttribute; n != "" {
		vals := attrs[n]
		if len(vals) != 1 || strings.TrimSpace(vals[0]) == "" {
			return certs.Identity{}, refuse("the assertion must carry exactly one value of " + n + " (the username)")
		}
		username = vals[0]
	}
	if !validUsername(username) {
		return certs.Identity{}, refuse("the username is empty, too long or holds spaces or control characters")
	}
	for _, k := range slices.Sorted(maps.Keys(p.cfg.Require)) {
		if !slices.Contains(attrs[k], p.cfg.Require[k]) {
			return certs.Identity{}, refuse("the assertion lacks the required value of attribute " + k)
		}
	}
	id := certs.Identity{Issuer: p.cfg.Name, Subject: nameID.Value, Username: username, Kind: certs.KindHuman}
	if p.sp != nil && p.sp.opts.Aliases != nil {
		id.Alias = p.sp.opts.Aliases(id.Issuer, id.Subject)
	}
	if n := p.cfg.GroupsAttribute; n != "" {
		for _, g := range attrs[n] {
			if g != "" && !slices.Contains(id.Groups, g) {
				id.Groups = append(id.Groups, g)
			}
		}
	}
	return id, nil
}

// validUsername reports whether a username can be a certificate principal
// and a log field: 1 to 256 bytes, no space or control character.
func validUsername(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// encryptedOnly reports whether a base64 SAMLResponse carries its
// assertion only encrypted: exactly one EncryptedAssertion and no
// Assertion among the Response's children. Anything malformed reports
// false (and is refused, whatever else would have happened to it).
func encryptedOnly(samlResponse string) bool {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(samlResponse))
	if err != nil {
		return false
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		return false
	}
	root := doc.Root()
	if root == nil || root.Tag != "Response" {
		return false
	}
	enc := 0
	for _, el := range root.ChildElements() {
		switch el.Tag {
		case "Assertion":
			return false
		case "EncryptedAssertion":
			enc++
		}
	}
	return enc == 1
}
