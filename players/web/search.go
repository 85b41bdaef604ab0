package web

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/state"
)

// searchPage is what the search page shows: the query and its hits,
// grouped by session (newest first), each hit a link that opens the
// session's replay at the hit's moment.
type searchPage struct {
	Query   string
	Results []searchSession
}

// searchSession is one session's hits.
type searchSession struct {
	state.SearchHit // the session's fields; the first hit's entry fields are not shown
	Hits            []searchHit
}

// searchHit is one hit: where it is and the line that matched, cut into
// matching and other segments for highlighting.
type searchHit struct {
	Session  string
	Kind     string
	Offset   string // seconds, for the replay link
	Clock    string // m:ss
	Segments []segment
}

// segment is a piece of a matched line; Match pieces are highlighted.
type segment struct {
	Text  string
	Match bool
}

// searchPage serves /ui/search?q=…: the search box, and the hits of a
// query, for auditors (the same permission as replay).
func (u *UI) searchPage(w http.ResponseWriter, r *http.Request, s session) {
	q := r.URL.Query()
	d := pageData{Title: "Search", Session: &s, Query: q, Search: &searchPage{Query: q.Get("q")}}
	if u.opts.SearchDisabled {
		d.Error = "Search is disabled on this server."
		u.render(w, r, http.StatusNotFound, "search.html", d)
		return
	}
	if q.Get("q") == "" {
		u.render(w, r, http.StatusOK, "search.html", d)
		return
	}
	sq, err := players.ParseSearch(q, u.now())
	if err != nil {
		d.Error = err.Error()
		u.render(w, r, http.StatusBadRequest, "search.html", d)
		return
	}
	hits, err := players.Search(r.Context(), u.opts.State, sq)
	if e := usererr.As(err); e != nil {
		d.Error = e.Msg
		u.render(w, r, e.HTTPStatus(), "search.html", d)
		return
	}
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	terms, _ := state.ParseSearchQuery(sq.Text) // parsed by Search already
	for _, h := range hits {
		n := len(d.Search.Results)
		if n == 0 || d.Search.Results[n-1].Session != h.Session {
			d.Search.Results = append(d.Search.Results, searchSession{SearchHit: h.SearchHit})
			n++
		}
		line := players.MatchedLine(h)
		d.Search.Results[n-1].Hits = append(d.Search.Results[n-1].Hits, searchHit{
			Session: h.Session, Kind: h.Kind, Offset: strconv.FormatFloat(h.Offset, 'f', 3, 64),
			Clock: clock(time.Duration(h.OffsetMS) * time.Millisecond), Segments: segments(line, terms.Highlights(line)),
		})
	}
	u.render(w, r, http.StatusOK, "search.html", d)
}

// segments cuts line at the matching ranges.
func segments(line string, ranges [][2]int) []segment {
	var out []segment
	at := 0
	for _, m := range ranges {
		if m[0] > at {
			out = append(out, segment{Text: line[at:m[0]]})
		}
		out = append(out, segment{Text: line[m[0]:m[1]], Match: true})
		at = m[1]
	}
	if at < len(line) {
		out = append(out, segment{Text: line[at:]})
	}
	return out
}

// startAt returns the replay position a search hit links to (?t=SECONDS),
// or "" when there is none or it is not a plain number of seconds.
func startAt(r *http.Request) string {
	t := r.URL.Query().Get("t")
	if t == "" || len(t) > 16 {
		return ""
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1e8 {
		return ""
	}
	return strconv.FormatFloat(f, 'f', 3, 64)
}
