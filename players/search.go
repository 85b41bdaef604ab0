package players

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/state"
)

// CodeSearchDisabled answers a search on a server with search.disabled.
const CodeSearchDisabled = "search_disabled"

// SearchHit is one answer of GET /v1/sessions/search: an index entry that
// matched, with its session and where it is in the recording.
type SearchHit struct {
	state.SearchHit
	// Offset is the moment to play from, in seconds: the first millisecond
	// boundary after the entry appeared (OffsetMS is cut to the
	// millisecond, the recording is not).
	Offset float64 `json:"offset"`
	// Matches are the byte ranges of Text that matched a search word.
	Matches [][2]int `json:"matches,omitempty"`
}

// ParseSearch reads a search from the query parameters q (the search,
// required), identity (or user: a username), identity_key, target, since
// and until (RFC 3339 or a duration before now, like "7d") and limit (1 to
// state.MaxSearchLimit).
func ParseSearch(q url.Values, now time.Time) (state.SearchQuery, error) {
	get := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	sq := state.SearchQuery{Text: get("q"), Identity: get("identity"), IdentityKey: get("identity_key"), Target: get("target")}
	if sq.Identity == "" {
		sq.Identity = get("user")
	}
	if sq.Text == "" {
		return sq, errors.New("q: say what to search for")
	}
	for _, s := range []string{sq.Text, sq.Identity, sq.IdentityKey, sq.Target} {
		if len(s) > 512 {
			return sq, errors.New("a search value is too long")
		}
	}
	var err error
	if sq.Since, err = ParseWhen(get("since"), now); err != nil {
		return sq, fmt.Errorf("since: %w", err)
	}
	if sq.Until, err = ParseWhen(get("until"), now); err != nil {
		return sq, fmt.Errorf("until: %w", err)
	}
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > state.MaxSearchLimit {
			return sq, fmt.Errorf("limit: want a number from 1 to %d", state.MaxSearchLimit)
		}
		sq.Limit = n
	}
	return sq, nil
}

// Search runs sq against st and returns the hits with their offsets and
// matching ranges. A query that cannot be parsed is a bad_query error whose
// message says why.
func Search(ctx context.Context, st *state.Store, sq state.SearchQuery) ([]SearchHit, error) {
	terms, err := state.ParseSearchQuery(sq.Text)
	if err != nil {
		return nil, fail(http.StatusBadRequest, CodeBadQuery, "q: "+err.Error(), nil)
	}
	hits, err := st.Search(ctx, sq)
	if err != nil {
		return nil, err
	}
	out := make([]SearchHit, len(hits))
	for i, h := range hits {
		out[i] = SearchHit{SearchHit: h, Offset: float64(h.OffsetMS+1) / 1000, Matches: terms.Highlights(h.Text)}
	}
	return out, nil
}

// search serves GET /v1/sessions/search with the permissions of replay:
// the auditor (or admin) permission searches every recording, anyone else
// their own (by identity key, as replay decides).
func (a *API) search(w http.ResponseWriter, r *http.Request, who reader) error {
	if a.opts.SearchDisabled {
		return fail(http.StatusNotFound, CodeSearchDisabled, "search is disabled on this server", nil)
	}
	sq, err := ParseSearch(r.URL.Query(), a.now())
	if err != nil {
		return fail(http.StatusBadRequest, CodeBadQuery, err.Error(), nil)
	}
	if !who.auditor {
		key := who.id.Key()
		if sq.Identity != "" && sq.Identity != who.id.Username || sq.IdentityKey != "" && sq.IdentityKey != key {
			return fail(http.StatusForbidden, CodeForbidden, "auditor permission required to search others' sessions", nil)
		}
		if key == "" {
			// No key, nothing of one's own (an empty filter matches all).
			httpx.WriteJSON(w, http.StatusOK, []SearchHit{})
			return nil
		}
		sq.IdentityKey = key
	}
	hits, err := Search(r.Context(), a.opts.State, sq)
	if err != nil {
		return err
	}
	if !who.auditor {
		hits = slices.DeleteFunc(hits, func(h SearchHit) bool { return !ownedBy(h.IdentityKey, who.id) })
	}
	httpx.WriteJSON(w, http.StatusOK, hits)
	return nil
}

// Search returns the hits of GET /v1/sessions/search for the query
// parameters q, identity, target, since, until and limit.
func (c *Client) Search(ctx context.Context, q url.Values) ([]SearchHit, error) {
	var hits []SearchHit
	if err := c.API.GetJSON(ctx, login.Query("/v1/sessions/search", q), &hits); err != nil {
		return nil, err
	}
	return hits, nil
}

// WriteSearchTable writes search hits as a table: the session, where in it,
// who and where, and the line that matched.
func WriteSearchTable(w io.Writer, hits []SearchHit) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSTARTED\tAT\tUSER\tTARGET\tKIND\tTEXT")
	for _, h := range hits {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Session, h.Start.Local().Format("2006-01-02 15:04:05"),
			clockOffset(h.OffsetMS), oneLine(h.Identity, 40), oneLine(h.Target, 30), h.Kind, oneLine(MatchedLine(h), 100))
	}
	return tw.Flush()
}

// MatchedLine returns the line of a hit's text that holds its first match
// (an output entry holds several lines), or its first line.
func MatchedLine(h SearchHit) string {
	text := h.Text
	if len(h.Matches) > 0 && h.Matches[0][0] <= len(text) {
		at := h.Matches[0][0]
		start := strings.LastIndexByte(text[:at], '\n') + 1
		end := strings.IndexByte(text[at:], '\n')
		if end < 0 {
			return text[start:]
		}
		return text[start : at+end]
	}
	line, _, _ := strings.Cut(text, "\n")
	return line
}

// clockOffset formats a position in a recording as m:ss (h:mm:ss past an
// hour).
func clockOffset(ms int64) string {
	s := ms / 1000
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
