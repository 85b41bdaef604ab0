package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRead(t *testing.T) {
	vcs := func(version string, settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: version}}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		name           string
		v, c           string
		bi             func() (*debug.BuildInfo, bool)
		want           Info
		wantStringPart string
	}{
		{name: "stamped wins", v: "v1.2.3", c: "abcdef0123456789", bi: vcs("v0.0.0-x", "vcs.revision", "ffff"),
			want: Info{Version: "v1.2.3", Commit: "abcdef0123456789", GoVersion: "go1.99.1"}, wantStringPart: "postern v1.2.3 (commit abcdef012345, go1.99.1,"},
		{name: "from build info", bi: vcs("v0.0.0-20260101000000-0123456789ab+dirty", "vcs.revision", "0123456789abcdef", "vcs.modified", "true"),
			want: Info{Version: "v0.0.0-20260101000000-0123456789ab+dirty", Commit: "0123456789abcdef", Modified: true, GoVersion: "go1.99.1"}},
		{name: "devel", bi: vcs("(devel)"), want: Info{Version: "dev", Commit: "unknown", GoVersion: "go1.99.1"}},
		{name: "nothing", bi: none, want: Info{Version: "dev", Commit: "unknown", GoVersion: runtime.Version()},
			wantStringPart: "postern dev (commit unknown,"},
		{name: "modified shown", v: "v2.0.0", c: "abc", bi: vcs("", "vcs.modified", "true"),
			want: Info{Version: "v2.0.0", Commit: "abc", Modified: true, GoVersion: "go1.99.1"}, wantStringPart: "(commit abc, modified, go1.99.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := read(tc.v, tc.c, tc.bi)
			tc.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
			if got != tc.want {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
			if tc.wantStringPart != "" && !strings.Contains(got.String(), tc.wantStringPart) {
				t.Errorf("String() = %q; want it to contain %q", got.String(), tc.wantStringPart)
			}
		})
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector())
	in := Get()
	want := `
# HELP postern_build_info Always 1; the labels say which postern build is running.
# TYPE postern_build_info gauge
postern_build_info{commit="` + in.Commit + `",goversion="` + in.GoVersion + `",version="` + in.Version + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "postern_build_info"); err != nil {
		t.Error(err)
	}
}
