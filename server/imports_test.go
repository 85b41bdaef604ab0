package server_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/testutil"
)

const module = "github.com/posternhq/postern/"

// importRules is the layering of postern's packages (docs/architecture.md):
// each package, with everything it imports directly or not, must not reach
// the packages listed. A rule's key ending in "/..." covers the package and
// those below it.
var importRules = map[string][]string{
	// The outer SSH server knows channels, policy and certificates; the
	// handlers of each target kind are given to it by server.
	"bastion": {"bastion/innerhop", "players/...", "approval", "recorder/...", "certs/devidp", "guardrails", "guardrails/pgproxy", "server"},
	// Identity and policy know nothing of sessions or their recordings.
	"certs/...": {"recorder/...", "bastion/...", "players/...", "approval", "server", "guardrails", "guardrails/pgproxy"},
	// SCIM locks through an interface server wires to the kill switch.
	"certs/scim": {"lock"},
	"policy":     {"recorder/...", "bastion/...", "players/...", "approval", "server", "guardrails", "guardrails/pgproxy"},
	// The recorder writes what it is given; it knows no SSH, no policy.
	"recorder/...": {"bastion/...", "certs/...", "policy", "approval", "players/...", "server", "guardrails/pgproxy"},
	"players/...":  {"bastion/...", "approval", "server", "guardrails", "guardrails/pgproxy"},
	"approval":     {"bastion/...", "players/...", "recorder/...", "server", "guardrails/pgproxy"},
	// Audit evidence reads recordings as objects; it knows no recorder.
	"audit": {"bastion/...", "certs/...", "policy", "approval", "players/...", "recorder/...", "server", "guardrails/..."},
	// The MCP server is a client of the bastion's public interfaces.
	"mcpserver": {"server", "bastion/innerhop", "approval", "guardrails", "guardrails/pgproxy", "players/...", "certs/devidp"},
	// The kill switch is asked by everything and knows none of it.
	"lock": {"bastion/...", "players/...", "approval", "recorder/...", "policy", "guardrails", "guardrails/pgproxy", "server", "certs/devidp", "certs/login"},
	// Search reads recordings and writes the index; it knows no SSH, policy or players.
	"search": {"bastion/...", "certs/...", "policy", "approval", "players/...", "server", "guardrails", "guardrails/pgproxy"},
	"state":  {"*"},
	// Foundations import nothing of postern (httpx only the error type it
	// writes, config only the detector names it validates).
	"guardrails/mask":     {"*"},
	"internal/usererr":    {"*"},
	"internal/netx":       {"*"},
	"internal/atomicfile": {"*"},
	"internal/promx":      {"*"},
	"internal/buildinfo":  {"*"},
	"internal/sbom":       {"*"},
	"internal/netguard":   {"*"},
	"internal/keyrate":    {"*"},
	"internal/httpx":      {"*", "!internal/usererr"},
	"internal/config":     {"*", "!guardrails/mask", "!internal/netguard"},
}

// testHarnesses are imported by tests (and each other) only.
var testHarnesses = []string{
	"internal/testutil", "internal/sshdtest", "internal/pgtest", "internal/dextest", "internal/s3test",
	"internal/posterntest", "internal/battery", "players/internal/playtest", "certs/devidp/devidptest", "internal/samltest", "internal/scimtest",
}

type listedPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// TestImportRules holds the import rules of docs/architecture.md over the
// non-test code: the layering above, nothing imports cmd/postern, only
// cmd/postern imports server, and test harnesses stay out of the product.
func TestImportRules(t *testing.T) {
	testutil.Need(t, "go")
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = testutil.RepoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		p.Imports = own(p.Imports)
		p.Deps = own(p.Deps)
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	harness := func(p string) bool { return slices.Contains(testHarnesses, p) }
	for _, p := range pkgs {
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "cmd/") {
				t.Errorf("%s imports %s: nothing imports a command", p.ImportPath, imp)
			}
			if imp == "server" && p.ImportPath != "cmd/postern" && !harness(p.ImportPath) {
				t.Errorf("%s imports server: only cmd/postern wires the service", p.ImportPath)
			}
			if harness(imp) && !harness(p.ImportPath) && p.ImportPath != "bench" && p.ImportPath != "deploy" {
				t.Errorf("%s imports the test harness %s", p.ImportPath, imp)
			}
		}
		for rule, banned := range importRules {
			if !covers(rule, p.ImportPath) {
				continue
			}
			allowed := map[string]bool{}
			for _, b := range banned {
				if a, ok := strings.CutPrefix(b, "!"); ok {
					allowed[a] = true
				}
			}
			for _, dep := range p.Deps {
				for _, b := range banned {
					if strings.HasPrefix(b, "!") || allowed[dep] || strings.HasPrefix(dep, p.ImportPath+"/") {
						continue
					}
					if b == "*" || covers(b, dep) {
						t.Errorf("%s reaches %s (rule %q: %q)", p.ImportPath, dep, rule, b)
					}
				}
			}
		}
	}
}

// own keeps postern's packages of paths, without the module prefix.
func own(paths []string) []string {
	var out []string
	for _, p := range paths {
		if q, ok := strings.CutPrefix(p, module); ok {
			out = append(out, q)
		}
	}
	return out
}

// covers reports whether pattern (a package, or "dir/..." for dir and below
// it) names pkg.
func covers(pattern, pkg string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == dir || strings.HasPrefix(pkg, dir+"/")
	}
	return pkg == pattern
}

// TestReleaseBuildLeavesOutDevIdP: a binary built with -tags nodevidp (make
// release, the container image) contains neither the development issuer nor
// the OpenID provider library it is built on.
func TestReleaseBuildLeavesOutDevIdP(t *testing.T) {
	testutil.Need(t, "go")
	deps := func(tags ...string) []string {
		args := append([]string{"list", "-deps"}, tags...)
		cmd := exec.Command("go", append(args, "./cmd/postern")...)
		cmd.Dir = testutil.RepoRoot(t)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", tags, err)
		}
		return strings.Fields(string(out))
	}
	dev := func(p string) bool {
		return p == module+"certs/devidp" || strings.HasPrefix(p, "github.com/zitadel/")
	}
	if !slices.ContainsFunc(deps(), dev) {
		t.Fatal("the default build has no development issuer: the check below proves nothing")
	}
	if got := slices.DeleteFunc(deps("-tags", "nodevidp"), func(p string) bool { return !dev(p) }); len(got) > 0 {
		t.Errorf("a -tags nodevidp build still contains %v", got)
	}
}
