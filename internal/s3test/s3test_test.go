package s3test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// admin runs versitygw's own admin client, which signs its requests with
// the root credentials, against s.
func admin(t *testing.T, s *Server, args ...string) string {
	t.Helper()
	full := append([]string{"admin", "--access", s.AccessKey(), "--secret", s.SecretKey(),
		"--region", s.Region(), "--endpoint-url", s.Endpoint()}, args...)
	out, err := exec.Command(Binary(t), full...).CombinedOutput()
	if err != nil {
		t.Fatalf("versitygw admin %s: %v\n%s\nserver log:\n%s", args[0], err, out, s.Log())
	}
	return string(out)
}

func get(t *testing.T, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRequestsMustBeSigned(t *testing.T) {
	s := Start(t)
	s.CreateBucket(t, "recordings")
	now := time.Now().UTC()
	badSig := "AWS4-HMAC-SHA256 Credential=" + s.AccessKey() + "/" + now.Format("20060102") +
		"/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + strings.Repeat("0", 64)
	tests := []struct {
		name string
		path string
		hdr  map[string]string
		code int
		want string
	}{
		{name: "unsigned list buckets", path: "/", code: 403, want: "AccessDenied"},
		{name: "unsigned get object", path: "/recordings/some/key", code: 403, want: "AccessDenied"},
		{name: "forged signature", path: "/recordings", code: 403, want: "SignatureDoesNotMatch", hdr: map[string]string{
			"Authorization":        badSig,
			"X-Amz-Date":           now.Format("20060102T150405Z"),
			"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
		}},
		// versitygw answers an unknown key in single-account mode this way.
		{name: "unknown access key", path: "/recordings", code: 404, want: "XAdminUserNotFound", hdr: map[string]string{
			"Authorization":        strings.Replace(badSig, s.AccessKey(), "nobody", 1),
			"X-Amz-Date":           now.Format("20060102T150405Z"),
			"X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, s.Endpoint()+tt.path, tt.hdr)
			if code != tt.code || !strings.Contains(body, "<Code>"+tt.want+"</Code>") {
				t.Fatalf("got %d %q; want %d with %s", code, body, tt.code, tt.want)
			}
		})
	}
}

func TestCreateBucketAndSignedClient(t *testing.T) {
	s := Start(t)
	s.CreateBucket(t, "recordings")
	s.CreateBucket(t, "other-bucket")
	out := admin(t, s, "list-buckets")
	for _, b := range []string{"recordings", "other-bucket"} {
		if !strings.Contains(out, b) {
			t.Errorf("signed list-buckets lacks %s:\n%s", b, out)
		}
	}
	if fi, err := os.Stat(s.ObjectPath("recordings", "")); err != nil || !fi.IsDir() {
		t.Fatalf("bucket directory: %v", err)
	}
}

func TestStopRestart(t *testing.T) {
	s := Start(t)
	s.CreateBucket(t, "recordings")
	port := s.Port()
	s.Stop()
	s.Stop()
	if _, err := http.Get(s.Endpoint() + "/"); err == nil {
		t.Fatal("server answers after Stop")
	}
	s.Restart(t)
	if s.Port() != port {
		t.Fatalf("port after Restart = %d; want %d", s.Port(), port)
	}
	if out := admin(t, s, "list-buckets"); !strings.Contains(out, "recordings") {
		t.Fatalf("bucket lost across restart:\n%s", out)
	}
}
