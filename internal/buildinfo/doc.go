// Package buildinfo says which postern this is: the version stamped at
// build time from the git tag (make build / make release pass it with
// -ldflags "-X …/internal/buildinfo.version=…"), the commit, and the Go
// toolchain, with fallbacks read from the binary's own build information
// (debug.ReadBuildInfo) when the linker stamped nothing. It also provides
// the postern_build_info metric.
//
// It imports nothing of postern.
package buildinfo
