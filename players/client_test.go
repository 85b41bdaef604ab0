package players

import (
	"bytes"
	"context"

	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/players/internal/playtest"
)

func (f *apiFixture) client(t *testing.T, user string) *Client {
	t.Helper()
	api, err := login.OpenAPIClient("", f.users.Profile(t, user, f.srv.URL), login.APIClientOptions{})
	if err != nil {
		t.Fatalf("OpenAPIClient: %v", err)
	}
	return &Client{API: api}
}

func TestClientListShowExport(t *testing.T) {
	f := newAPIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "printf 'hi\\033[2J'",
		playtest.Step{Output: "hi there\r\n"}, playtest.Step{Marker: "command: printf"})
	c := f.client(t, auditor)
	ctx := context.Background()

	rows, err := c.List(ctx, url.Values{"user": {"alice@example.com"}, "target": {""}})
	if err != nil || len(rows) != 1 || rows[0].ID != id {
		t.Fatalf("List = %v, %v; want the one session", rows, err)
	}
	var table bytes.Buffer
	if err := WriteTable(&table, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), id) || strings.Contains(table.String(), "\x1b") {
		t.Errorf("table %q: want the id and no escape characters", table.String())
	}

	d, err := c.Show(ctx, strings.ToLower(id), false)
	if err != nil || d.Integrity.Status != IntegrityOK {
		t.Fatalf("Show = %+v, %v; want integrity ok", d, err)
	}
	var detail bytes.Buffer
	WriteDetail(&detail, d)
	for _, want := range []string{"integrity: ok", "user:      alice@example.com (corp)", "exit status 0", "approvals: none"} {
		if !strings.Contains(detail.String(), want) {
			t.Errorf("detail lacks %q:\n%s", want, detail.String())
		}
	}

	for _, v := range []int{2, 3} {
		var out bytes.Buffer
		var calls int
		if err := c.Export(ctx, id, &out, v, func(done, total int64) { calls++ }); err != nil {
			t.Fatalf("Export v%d: %v", v, err)
		}
		if calls == 0 {
			t.Errorf("v%d: progress never called", v)
		}
		header, events := castLines(t, out.Bytes())
		if header["version"] != float64(v) {
			t.Errorf("v%d export has header %v", v, header)
		}
		last := events[len(events)-1]
		if v == 3 && (last[1] != "x" || last[2] != "0") {
			t.Errorf("v3 export ends with %v; want the exit event", last)
		}
	}

	p, err := New(c.Source(ctx, id), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out bytes.Buffer
	p.Seek(&out, time.Hour)
	p.Seek(&out, 0) // reopens through the API
	p.Seek(&out, time.Hour)
	if got := out.String(); got != "hi there\r\n"+resetTerminal+"hi there\r\n" {
		t.Errorf("replayed %q", got)
	}

	if rows, err := f.client(t, developer).List(ctx, nil); err != nil || len(rows) != 0 {
		t.Errorf("non-auditor List: got %v, %v; want none of the others' sessions", rows, err)
	}
	if _, err := c.Show(ctx, "../etc/passwd", false); err == nil {
		t.Error("Show accepted a path as an id")
	}
}

func TestClientWatchLive(t *testing.T) {
	f := newAPIFixture(t)
	c := f.client(t, auditor)
	s := f.env.Start(t, "alice@example.com", "web-1", "")
	playtest.Play(t, s, playtest.Step{Output: "before\r\n"})

	if _, _, err := c.OpenCast(context.Background(), s.ID(), false); err == nil || !strings.Contains(err.Error(), "postern watch") {
		t.Errorf("OpenCast of a running session: got %v; want a hint to watch", err)
	}
	if err := c.Export(context.Background(), s.ID(), &bytes.Buffer{}, 2, nil); err == nil {
		t.Error("Export of a running session succeeded")
	}

	rc, _, err := c.OpenCast(context.Background(), s.ID(), true)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := newLineSink()
	done := make(chan error, 1)
	go func() { done <- Terminal{Out: pw}.Watch(context.Background(), rc) }()
	pr.waitFor(t, "before\r\n")
	playtest.Play(t, s, playtest.Step{Output: "during\r\n"})
	pr.waitFor(t, "during\r\n")
	playtest.Finish(t, s)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not end when the session finished")
	}
}

// lineSink is a writer whose writes a test can wait for.
type lineSink struct{ ch chan string }

func newLineSink() (*lineSink, *lineSink) {
	s := &lineSink{ch: make(chan string, 64)}
	return s, s
}

func (s *lineSink) Write(b []byte) (int, error) {
	s.ch <- string(b)
	return len(b), nil
}

func (s *lineSink) waitFor(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-s.ch:
		if got != want {
			t.Fatalf("got %q; want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %q", want)
	}
}
