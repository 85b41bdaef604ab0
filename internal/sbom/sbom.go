package sbom

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Document is an SPDX 2.3 document (the subset postern writes).
type Document struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      CreationInfo   `json:"creationInfo"`
	Packages          []Package      `json:"packages"`
	Relationships     []Relationship `json:"relationships"`
}

// CreationInfo says who made the document and when.
type CreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

// Package is one SPDX package: the binary, a Go module, or the toolchain.
type Package struct {
	Name             string        `json:"name"`
	SPDXID           string        `json:"SPDXID"`
	VersionInfo      string        `json:"versionInfo,omitempty"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	Checksums        []Checksum    `json:"checksums,omitempty"`
	LicenseConcluded string        `json:"licenseConcluded"`
	LicenseDeclared  string        `json:"licenseDeclared"`
	CopyrightText    string        `json:"copyrightText"`
	PrimaryPurpose   string        `json:"primaryPackagePurpose,omitempty"`
	Comment          string        `json:"comment,omitempty"`
	ExternalRefs     []ExternalRef `json:"externalRefs,omitempty"`
}

// Checksum is a file digest.
type Checksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

// ExternalRef names a package in another system (a purl).
type ExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

// Relationship links two SPDX elements.
type Relationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// Input is what the document describes.
type Input struct {
	// File is the binary's file name; Binary its content (for its digest).
	File   string
	Binary []byte
	// Info is the binary's embedded build information.
	Info *debug.BuildInfo
	// Version is postern's release version (a git tag).
	Version string
	// Created is when the document was made: the commit time of a
	// reproducible release, not the wall clock.
	Created time.Time
}

// SPDX returns the SPDX 2.3 JSON document of in: the binary (with its
// SHA-256), which contains the Go toolchain and every module it was built
// from (with purls and their go.sum hashes), and the build settings.
// The output depends only on in, so a reproducible build gets a
// reproducible SBOM.
func SPDX(in Input) ([]byte, error) {
	bi := in.Info
	if bi == nil {
		return nil, fmt.Errorf("sbom: no build information")
	}
	sum := sha256.Sum256(in.Binary)
	digest := hex.EncodeToString(sum[:])
	doc := Document{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              in.File,
		DocumentNamespace: "https://github.com/posternhq/postern/spdx/" + in.Version + "/" + in.File + "-" + digest[:16],
		CreationInfo: CreationInfo{
			Created:  in.Created.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: postern-sbom", "Organization: postern"},
		},
	}
	var settings []string
	for _, s := range bi.Settings {
		settings = append(settings, s.Key+"="+s.Value)
	}
	root := Package{
		Name: bi.Main.Path, SPDXID: "SPDXRef-Package-postern", VersionInfo: in.Version,
		DownloadLocation: "https://github.com/posternhq/postern", FilesAnalyzed: false,
		Checksums:        []Checksum{{Algorithm: "SHA256", Value: digest}},
		LicenseConcluded: "Apache-2.0", LicenseDeclared: "Apache-2.0", CopyrightText: "NOASSERTION",
		PrimaryPurpose: "APPLICATION",
		Comment:        "the file " + in.File + ", built with " + bi.GoVersion + "; build settings: " + strings.Join(settings, " "),
		ExternalRefs:   []ExternalRef{purl(bi.Main.Path, in.Version)},
	}
	doc.Packages = append(doc.Packages, root)
	doc.Relationships = append(doc.Relationships, Relationship{"SPDXRef-DOCUMENT", "DESCRIBES", root.SPDXID})
	toolchain := Package{
		Name: "go", SPDXID: "SPDXRef-Package-go", VersionInfo: strings.TrimPrefix(bi.GoVersion, "go"),
		DownloadLocation: "https://go.dev/dl/", LicenseConcluded: "NOASSERTION", LicenseDeclared: "BSD-3-Clause",
		CopyrightText: "NOASSERTION", Comment: "the Go toolchain and standard library linked into the binary",
		ExternalRefs: []ExternalRef{purl("stdlib", bi.GoVersion)},
	}
	doc.Packages = append(doc.Packages, toolchain)
	doc.Relationships = append(doc.Relationships, Relationship{root.SPDXID, "CONTAINS", toolchain.SPDXID})
	deps := slices.Clone(bi.Deps)
	slices.SortFunc(deps, func(a, b *debug.Module) int { return strings.Compare(a.Path, b.Path) })
	for i, d := range deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		p := Package{
			Name: m.Path, SPDXID: fmt.Sprintf("SPDXRef-Package-%d", i+1), VersionInfo: m.Version,
			DownloadLocation: "NOASSERTION", LicenseConcluded: "NOASSERTION", LicenseDeclared: "NOASSERTION",
			CopyrightText: "NOASSERTION", ExternalRefs: []ExternalRef{purl(m.Path, m.Version)},
		}
		if m.Sum != "" {
			p.Comment = "go.sum " + m.Sum
		}
		if d.Replace != nil {
			p.Comment = strings.TrimSpace(p.Comment + "; replaces " + d.Path + " " + d.Version)
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, Relationship{root.SPDXID, "CONTAINS", p.SPDXID})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("sbom: %w", err)
	}
	return append(b, '\n'), nil
}

// purl is the package URL of a Go module (pkg:golang/path@version).
func purl(path, version string) ExternalRef {
	loc := "pkg:golang/" + path
	if version != "" {
		loc += "@" + version
	}
	return ExternalRef{Category: "PACKAGE-MANAGER", Type: "purl", Locator: loc}
}
