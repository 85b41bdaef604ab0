package players

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/state"
)

// Client is the client side of the sessions API, used by `postern sessions`,
// `play` and `watch`. Requests are signed with the login profile.
type Client struct {
	// API sends signed requests to the bastion.
	API *login.APIClient
}

// List returns the index rows matching the query parameters of
// GET /v1/sessions (user, target, role, status, q, since, until, limit).
func (c *Client) List(ctx context.Context, q url.Values) ([]state.Session, error) {
	var rows []state.Session
	if err := c.API.GetJSON(ctx, login.Query("/v1/sessions", q), &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

// Show returns a session's metadata and integrity status; full hashes the
// stored recording on the server.
func (c *Client) Show(ctx context.Context, id string, full bool) (SessionDetail, error) {
	var d SessionDetail
	id, ok := NormalizeID(id)
	if !ok {
		return d, errBadID
	}
	path := "/v1/sessions/" + id
	if full {
		path += "?verify=full"
	}
	err := c.API.GetJSON(ctx, path, &d)
	return d, err
}

var errBadID = errors.New("not a session id (26 characters, like 01JD3V6Q8YB4ZK1N2M3P4Q5R6S)")

// OpenCast opens a session's cast; with follow, a running session is
// streamed until it ends. It returns the body and its length (-1 if
// unknown).
func (c *Client) OpenCast(ctx context.Context, id string, follow bool) (io.ReadCloser, int64, error) {
	id, ok := NormalizeID(id)
	if !ok {
		return nil, 0, errBadID
	}
	path := "/v1/sessions/" + id + "/cast"
	if follow {
		path += "?follow=1"
	}
	req, err := c.API.NewRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.API.Do(req)
	if err != nil {
		var se *login.ServerError
		if errors.As(err, &se) && se.Code == CodeRunning {
			return nil, 0, fmt.Errorf("session %s is still running; watch it with: postern watch %s", id, id)
		}
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// Source returns a Source that (re)opens a session's stored cast.
func (c *Client) Source(ctx context.Context, id string) Source {
	return func() (io.ReadCloser, error) {
		rc, _, err := c.OpenCast(ctx, id, false)
		return rc, err
	}
}

// Export downloads a session's cast and writes it to w as asciicast v2 or
// v3. progress, if not nil, is called as bytes arrive with the count so far
// and the total (-1 if unknown).
func (c *Client) Export(ctx context.Context, id string, w io.Writer, version int, progress func(done, total int64)) error {
	d, err := c.Show(ctx, id, false)
	if err != nil {
		return err
	}
	if d.Status == state.StatusRunning {
		return fmt.Errorf("session %s is still running; export it once it has ended", d.ID)
	}
	rc, size, err := c.OpenCast(ctx, id, false)
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = rc
	if progress != nil {
		r = &progressReader{r: rc, total: size, fn: progress}
	}
	return Export(w, r, ExportOptions{Version: version, ExitStatus: d.ExitStatus})
}

// progressReader reports the bytes read through it.
type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.fn(p.done, p.total)
	return n, err
}

// FileSource opens a cast file.
func FileSource(path string) Source {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open cast: %w", err)
		}
		return f, nil
	}
}

// URLSource fetches a cast over HTTP(S) with hc (http.DefaultClient if nil);
// each backward seek fetches it again.
func URLSource(ctx context.Context, hc *http.Client, u string) Source {
	if hc == nil {
		hc = http.DefaultClient
	}
	return func() (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch cast: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetch cast: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("fetch cast: the server answered %s", resp.Status)
		}
		return resp.Body, nil
	}
}

// WriteTable writes index rows as a table.
func WriteTable(w io.Writer, rows []state.Session, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTARTED\tDURATION\tUSER\tTARGET\tLOGIN\tSTATUS\tCOMMAND")
	for _, s := range rows {
		end := now
		if s.End != nil {
			end = *s.End
		}
		status := s.Status
		if s.ExitStatus != nil {
			status += fmt.Sprintf(" (%d)", *s.ExitStatus)
		}
		cmd := s.Command
		if cmd == "" {
			cmd = "(" + s.Kind + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Start.Local().Format("2006-01-02 15:04:05"),
			end.Sub(s.Start).Round(time.Second), oneLine(s.Identity, 40), oneLine(s.Target, 30), oneLine(s.Login, 20),
			status, oneLine(cmd, 60))
	}
	return tw.Flush()
}

// WriteDetail writes a session's metadata and integrity as aligned
// "key: value" lines.
func WriteDetail(w io.Writer, d SessionDetail) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	line := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	line("id", d.ID)
	line("user", d.Identity+" ("+d.Issuer+")")
	if d.IdentityKey != "" {
		line("identity", d.IdentityKey)
	}
	line("role", d.Role)
	line("target", d.Target)
	line("login", d.Login)
	line("kind", d.Kind)
	if d.Command != "" {
		line("command", oneLine(d.Command, 200))
	}
	line("started", d.Start.Local().Format(time.RFC3339))
	if d.End != nil {
		line("ended", d.End.Local().Format(time.RFC3339)+" ("+d.End.Sub(d.Start).Round(time.Second).String()+")")
	}
	status := d.Status
	if d.ExitStatus != nil {
		status += fmt.Sprintf(", exit status %d", *d.ExitStatus)
	}
	line("status", status)
	line("bytes", fmt.Sprintf("%d in, %d out", d.BytesIn, d.BytesOut))
	if d.Size > 0 {
		line("recording", fmt.Sprintf("%s (%d bytes)", d.Object, d.Size))
	}
	if d.SHA256 != "" {
		line("sha256", d.SHA256)
	}
	if d.SealSeq > 0 {
		line("sealed", fmt.Sprintf("audit event %d", d.SealSeq))
	}
	integ := d.Integrity.Status
	if d.Integrity.Checked != "" {
		integ += " (checked " + d.Integrity.Checked + ")"
	}
	if d.Integrity.Detail != "" {
		integ += ": " + d.Integrity.Detail
	}
	line("integrity", integ)
	if approvals, ok := d.Meta["approvals"].([]any); ok && len(approvals) > 0 {
		for i, a := range approvals {
			line(fmt.Sprintf("approval %d", i+1), approvalText(a))
		}
	} else {
		line("approvals", "none")
	}
	return tw.Flush()
}

// approvalText renders one approval record of the session metadata.
func approvalText(a any) string {
	m, ok := a.(map[string]any)
	if !ok {
		return oneLine(fmt.Sprint(a), 200)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return oneLine(strings.Join(parts, " "), 200)
}

// oneLine makes s safe for one table cell: control characters become
// spaces (a recorded command must not move the auditor's cursor) and long
// values are cut.
func oneLine(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > limit {
		s = string(r[:limit-1]) + "…"
	}
	return s
}
