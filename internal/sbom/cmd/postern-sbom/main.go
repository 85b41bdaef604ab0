// Command postern-sbom writes the SPDX 2.3 SBOM of a postern binary to
// stdout, from the build information embedded in it:
//
//	postern-sbom -version v1.2.3 -created 2026-01-02T03:04:05Z dist/postern-v1.2.3-linux-amd64
//
// `make release` runs it (with -created set to the commit time, so the
// document is reproducible).
package main

import (
	"debug/buildinfo"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/posternhq/postern/internal/sbom"
)

func main() {
	version := flag.String("version", "", "postern's release version")
	created := flag.String("created", "", "the document's creation time, RFC 3339 (the commit time for a reproducible release)")
	flag.Parse()
	if err := run(flag.Args(), *version, *created); err != nil {
		fmt.Fprintln(os.Stderr, "postern-sbom:", err)
		os.Exit(1)
	}
}

func run(args []string, version, created string) error {
	if len(args) != 1 || version == "" || created == "" {
		return fmt.Errorf("usage: postern-sbom -version V -created RFC3339 BINARY")
	}
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	bin, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	info, err := buildinfo.ReadFile(args[0])
	if err != nil {
		return fmt.Errorf("%s: no Go build information: %w", args[0], err)
	}
	doc, err := sbom.SPDX(sbom.Input{File: filepath.Base(args[0]), Binary: bin, Info: info, Version: version, Created: t})
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(doc)
	return err
}
