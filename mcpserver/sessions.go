package mcpserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// defaultOutput is how much of a session's output session_output returns
// unless asked for another amount; maxOutputRead caps what is asked for.
const (
	defaultOutput = 64 << 10
	maxOutputRead = 1 << 20
)

// readSession reads session id's row and, once it ended, its recording's
// output (the last maxBytes) and markers.
func readSession(ctx context.Context, api *login.APIClient, id string, maxBytes int) (SessionOutput, error) {
	var out SessionOutput
	if err := api.GetJSON(ctx, "/v1/sessions/"+url.PathEscape(id), &out.Session); err != nil {
		return out, err
	}
	if out.Session.Status == state.StatusRunning || out.Session.Object == "" {
		return out, nil
	}
	if maxBytes <= 0 {
		maxBytes = defaultOutput
	}
	maxBytes = min(maxBytes, maxOutputRead)
	req, err := api.NewRequest(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/cast", nil)
	if err != nil {
		return out, err
	}
	resp, err := api.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	dec := recorder.NewDecoder(resp.Body)
	if _, err := dec.Header(); err != nil {
		return out, err
	}
	var text []byte
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, recorder.ErrTornLine) {
			break
		}
		if err != nil {
			return out, err
		}
		switch ev.Code {
		case recorder.CodeOutput:
			text = append(text, ev.Data...)
			if len(text) > 2*maxBytes { // keep the tail without growing forever
				text = append(text[:0], text[len(text)-maxBytes:]...)
				out.Truncated = true
			}
		case recorder.CodeMarker:
			out.Markers = append(out.Markers, ev.Data)
		}
	}
	if len(text) > maxBytes {
		text, out.Truncated = text[len(text)-maxBytes:], true
	}
	out.Output = string(text)
	return out, nil
}

// ownSessions returns the sessions API filter of the sessions of the
// identity a user certificate names: its identity key (a username may be
// several identities'), or its username for a certificate without a key.
func ownSessions(cert *ssh.Certificate) (param, value string) {
	if id, err := certs.IdentityFromCert(cert); err == nil {
		if k := id.Key(); k != "" {
			return "identity_key", k
		}
		return "user", id.Username
	}
	if len(cert.ValidPrincipals) > 0 {
		return "user", cert.ValidPrincipals[0]
	}
	return "user", ""
}
