package players

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/recorder"
)

// benchCast builds a v2 cast of n output events of about 200 bytes each,
// with a marker every 100 events.
func benchCast(b *testing.B, n int) []byte {
	b.Helper()
	enc, _ := recorder.NewEncoder(2)
	buf, err := enc.AppendHeader(nil, recorder.Header{Width: 120, Height: 40})
	if err != nil {
		b.Fatal(err)
	}
	line := bytes.Repeat([]byte("drwxr-xr-x  2 deploy deploy 4096 Nov 27 11:00 \x1b[01;34mreleases\x1b[0m é\r\n"), 3)
	for i := 0; i < n; i++ {
		t := time.Duration(i) * 10 * time.Millisecond
		buf = enc.AppendOutput(buf, t, line)
		if i%100 == 0 {
			buf = enc.AppendMarker(buf, t, fmt.Sprintf("command %d", i))
		}
	}
	return buf
}

func BenchmarkExportV3(b *testing.B) {
	cast := benchCast(b, 50000)
	b.SetBytes(int64(len(cast)))
	b.ResetTimer()
	for b.Loop() {
		if err := Export(io.Discard, bytes.NewReader(cast), ExportOptions{Version: 3}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlayerSeekToEnd(b *testing.B) {
	cast := benchCast(b, 50000)
	b.SetBytes(int64(len(cast)))
	b.ResetTimer()
	for b.Loop() {
		p, err := New(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cast)), nil }, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Seek(io.Discard, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}

// BenchmarkAPICast measures GET /v1/sessions/{id}/cast (signed request,
// authentication, index read, store read) for a small recording.
func BenchmarkAPICast(b *testing.B) {
	env := playtest.New(b)
	users := playtest.NewUsers(b)
	id := env.Record(b, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "up 3 days\r\n"})
	api := NewAPI(APIOptions{
		Auth:        &certs.APIAuth{Authority: users.Authority},
		Permissions: func(certs.Identity) []string { return []string{PermAuditor} },
		State:       env.State, Store: env.Store,
	})
	srv := httptest.NewServer(api)
	b.Cleanup(srv.Close)
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/sessions/"+id+"/cast", nil)
		users.Sign(b, req, "audra@example.com")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
