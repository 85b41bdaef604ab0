package sbom

import (
	"bytes"
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestSPDX: the document describes the binary (with its digest), the
// toolchain and every module with its purl and go.sum hash (a replaced
// module as its replacement), and is the same for the same input.
func TestSPDX(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.10", Path: "github.com/posternhq/postern/cmd/postern",
		Main: debug.Module{Path: "github.com/posternhq/postern", Version: "(devel)"},
		Deps: []*debug.Module{
			{Path: "golang.org/x/crypto", Version: "v0.59.0", Sum: "h1:abc="},
			{Path: "github.com/jackc/pgx/v5", Version: "v5.13.0", Sum: "h1:def="},
			{Path: "example.com/old", Version: "v1.0.0", Replace: &debug.Module{Path: "example.com/new", Version: "v1.1.0", Sum: "h1:ghi="}},
		},
		Settings: []debug.BuildSetting{{Key: "-tags", Value: "nodevidp"}, {Key: "CGO_ENABLED", Value: "0"}, {Key: "GOARCH", Value: "arm64"}},
	}
	in := Input{File: "postern-v1.0.0-linux-arm64", Binary: []byte("binary"), Info: bi, Version: "v1.0.0",
		Created: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	out, err := SPDX(in)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := SPDX(in)
	if !bytes.Equal(out, again) {
		t.Error("the same input gave two documents")
	}
	var doc Document
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || doc.CreationInfo.Created != "2026-11-01T12:00:00Z" || len(doc.Packages) != 5 {
		t.Fatalf("document %+v", doc)
	}
	root := doc.Packages[0]
	if root.Checksums[0].Value != "9a3a45d01531a20e89ac6ae10b0b0beb0492acd7216a368aa062d1a5fecaf9cd" || root.VersionInfo != "v1.0.0" ||
		!strings.Contains(root.Comment, "-tags=nodevidp") || root.LicenseDeclared != "Apache-2.0" {
		t.Errorf("binary package %+v", root)
	}
	want := map[string]string{
		"go": "pkg:golang/stdlib@go1.26.10", "github.com/jackc/pgx/v5": "pkg:golang/github.com/jackc/pgx/v5@v5.13.0",
		"golang.org/x/crypto": "pkg:golang/golang.org/x/crypto@v0.59.0", "example.com/new": "pkg:golang/example.com/new@v1.1.0",
	}
	for _, p := range doc.Packages[1:] {
		if want[p.Name] != p.ExternalRefs[0].Locator {
			t.Errorf("package %s purl %s; want %s", p.Name, p.ExternalRefs[0].Locator, want[p.Name])
		}
	}
	if !strings.Contains(string(out), "replaces example.com/old v1.0.0") || len(doc.Relationships) != 5 {
		t.Errorf("replacement or relationships missing:\n%s", out)
	}
	if _, err := SPDX(Input{}); err == nil {
		t.Error("no build information accepted")
	}
}
