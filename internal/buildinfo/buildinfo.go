package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Stamped at link time by the Makefile and the Dockerfile:
//
//	-X github.com/posternhq/postern/internal/buildinfo.version=v1.2.3
//	-X github.com/posternhq/postern/internal/buildinfo.commit=<full hash>
//
// Empty means "not stamped": the build information of the binary is used.
var (
	version string
	commit  string
)

// Info describes a build.
type Info struct {
	// Version is the release (a git tag such as v1.2.3, or a pseudo-version
	// for a build between tags); "dev" when nothing says better.
	Version string `json:"version"`
	// Commit is the git commit the binary was built from; "unknown" if the
	// build recorded none.
	Commit string `json:"commit"`
	// Modified reports whether the work tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

var (
	once sync.Once
	info Info
)

// Get returns this binary's build information.
func Get() Info {
	once.Do(func() { info = read(version, commit, debug.ReadBuildInfo) })
	return info
}

// read builds an Info from the stamped values and, where they are empty,
// from the binary's build information.
func read(v, c string, buildInfo func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: v, Commit: c, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := buildInfo(); ok {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			// Go stamps a module version from the VCS tag (or a pseudo-version
			// from the commit) when it builds inside a repository.
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "dev"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

// ShortCommit returns the first 12 characters of the commit.
func (i Info) ShortCommit() string {
	if len(i.Commit) > 12 {
		return i.Commit[:12]
	}
	return i.Commit
}

// String is the one-line form `postern --version` prints:
// "postern v1.2.3 (commit 0123456789ab, go1.26.8, linux/amd64)".
func (i Info) String() string {
	c := i.ShortCommit()
	if i.Modified && !strings.HasSuffix(i.Version, "dirty") {
		c += ", modified"
	}
	return fmt.Sprintf("postern %s (commit %s, %s, %s)", i.Version, c, i.GoVersion, i.Platform)
}

// Collector returns the postern_build_info gauge: always 1, with the
// version, commit and Go version as labels (join it to other series to see
// which build produced them).
func Collector() prometheus.Collector {
	in := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "postern_build_info",
		Help: "Always 1; the labels say which postern build is running.",
		ConstLabels: prometheus.Labels{
			"version": in.Version, "commit": in.Commit, "goversion": in.GoVersion,
		},
	})
	g.Set(1)
	return g
}
