// Package sbom writes the software bill of materials of a postern binary
// (SPDX 2.3, JSON) from the build information the Go linker embeds in it
// (debug/buildinfo: the main module, every dependency module with its
// version and go.sum hash, the toolchain and the build settings), so that a
// release's SBOM describes exactly the binary it ships with and needs no
// tool from outside the Go toolchain. `make release` runs
// internal/sbom/cmd/postern-sbom over each binary.
//
// It imports nothing of postern.
package sbom
