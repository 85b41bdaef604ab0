// Package deploy_test validates the deployment artifacts: the Dockerfile and
// .dockerignore, the docker compose quick-start (parsed structurally, every
// file it references present, postern's and Dex's configs valid), the
// systemd unit, and the Helm chart (rendered by bin/helm, built from
// tools/helm, then every manifest checked).
package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
)

// root is the repository root.
func root(t *testing.T) string {
	t.Helper()
	return testutil.RepoRoot(t)
}

func readFile(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// --- Dockerfile ------------------------------------------------------------

// dockerInstr is one Dockerfile instruction with continuation lines joined.
type dockerInstr struct {
	cmd  string // upper case
	args string
}

func parseDockerfile(t *testing.T, text string) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue // comment inside a continuation
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() != 0 {
		t.Fatalf("Dockerfile ends inside a continuation: %q", cur.String())
	}
	return out
}

func TestDockerfile(t *testing.T) {
	r := root(t)
	ins := parseDockerfile(t, readFile(t, r, "Dockerfile"))
	known := map[string]bool{"FROM": true, "ARG": true, "WORKDIR": true, "COPY": true, "RUN": true, "ENV": true,
		"USER": true, "EXPOSE": true, "VOLUME": true, "ENTRYPOINT": true, "CMD": true, "LABEL": true, "HEALTHCHECK": true}
	var stages []string // stage names in order
	var final []dockerInstr
	var run strings.Builder
	for _, in := range ins {
		if !known[in.cmd] {
			t.Errorf("unknown Dockerfile instruction %s", in.cmd)
		}
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.args)
			name := ""
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				name = f[2]
			}
			stages = append(stages, name)
			final = nil
		case "RUN":
			run.WriteString(in.args + "\n")
		case "COPY":
			checkCopy(t, r, in.args, stages)
		}
		final = append(final, in)
	}
	if len(stages) < 3 {
		t.Fatalf("want a multi-stage build (web, build, runtime), got %d stages", len(stages))
	}
	for _, want := range []string{"npm ci", "node build.mjs", "CGO_ENABLED=0", "-trimpath", "./cmd/postern"} {
		if !strings.Contains(run.String(), want) {
			t.Errorf("no RUN step contains %q", want)
		}
	}
	// The web stage runs only because players/web has a package.json.
	if _, err := os.Stat(filepath.Join(r, "players/web/package.json")); err != nil {
		t.Errorf("the node stage builds players/web, which has no package.json: %v", err)
	}
	if !strings.Contains(final[0].args, "distroless/static") || !strings.Contains(final[0].args, "nonroot") {
		t.Errorf("final stage base = %q, want a distroless static nonroot image", final[0].args)
	}
	var user, expose, entry string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "EXPOSE":
			expose = in.args
		case "ENTRYPOINT":
			entry = in.args
		}
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("final stage USER = %q, want a non-root user", user)
	}
	if f := strings.Fields(expose); !slices.Contains(f, "2222") || !slices.Contains(f, "8080") {
		t.Errorf("EXPOSE %q, want 2222 and 8080", expose)
	}
	if !strings.Contains(entry, "/usr/local/bin/postern") {
		t.Errorf("ENTRYPOINT %q does not run postern", entry)
	}
}

// TestImageBinaryStatic: the binary built as the Dockerfile builds it runs
// on a distroless static base: no program interpreter, no shared libraries.
func TestImageBinaryStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/postern")
	}
	f, err := elf.Open(testutil.PosternBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a program interpreter: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("the binary needs shared libraries %v (%v)", libs, err)
	}
}

// checkCopy checks that a COPY from the build context names paths that exist
// and are not excluded by .dockerignore, and that COPY --from names an
// earlier stage.
func checkCopy(t *testing.T, r, args string, stages []string) {
	t.Helper()
	f := strings.Fields(args)
	from := ""
	for len(f) > 0 && strings.HasPrefix(f[0], "--") {
		if v, ok := strings.CutPrefix(f[0], "--from="); ok {
			from = v
		}
		f = f[1:]
	}
	if len(f) < 2 {
		t.Errorf("COPY %s: want sources and a destination", args)
		return
	}
	if from != "" {
		if !slices.Contains(stages[:len(stages)-1], from) {
			t.Errorf("COPY --from=%s: no earlier stage of that name", from)
		}
		return
	}
	ignore := dockerignore(t, r)
	for _, src := range f[:len(f)-1] {
		if src == "." {
			continue
		}
		if _, err := os.Stat(filepath.Join(r, src)); err != nil {
			t.Errorf("COPY %s: %v", src, err)
		}
		if ignored(ignore, strings.TrimSuffix(src, "/")) {
			t.Errorf("COPY %s: excluded by .dockerignore", src)
		}
	}
}

func dockerignore(t *testing.T, r string) []string {
	t.Helper()
	var pats []string
	for line := range strings.Lines(readFile(t, r, ".dockerignore")) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pats = append(pats, strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/"))
	}
	return pats
}

// ignored reports whether path (slash-separated, relative to the context)
// or one of its parents matches a .dockerignore pattern. "**/" matches any
// number of leading directories.
func ignored(pats []string, path string) bool {
	parts := strings.Split(path, "/")
	for _, p := range pats {
		any := strings.HasPrefix(p, "**/")
		p = strings.TrimPrefix(p, "**/")
		for i := range parts {
			for j := i + 1; j <= len(parts); j++ {
				if !any && i > 0 {
					continue
				}
				if ok, _ := filepath.Match(p, strings.Join(parts[i:j], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

func TestDockerignore(t *testing.T) {
	pats := dockerignore(t, root(t))
	for _, p := range []string{".git", "bin/dex", "postern", "bastion.test", "players/web/node_modules", ".postern/ca"} {
		if !ignored(pats, p) {
			t.Errorf("%s is sent to the build context; .dockerignore should exclude it", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/postern/main.go", "players/web/package.json",
		"players/web/assets/README.md", "state/migrations/0001_init.sql", "internal/config/config.go"} {
		if ignored(pats, p) {
			t.Errorf("%s is excluded by .dockerignore but the build needs it", p)
		}
	}
}

// --- docker compose ----------------------------------------------------------

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Command     any               `yaml:"command"`
	Entrypoint  any               `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
		Retries  int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	Restart     string `yaml:"restart"`
	NetworkMode string `yaml:"network_mode"`
}

type composeBuild struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Args       map[string]string `yaml:"args"`
}

// decodeStrict decodes YAML with unknown fields refused.
func decodeStrict(t *testing.T, text string, v any) {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

func TestCompose(t *testing.T) {
	r := root(t)
	dir := filepath.Join(r, "deploy/compose")
	var cf composeFile
	decodeStrict(t, readFile(t, dir, "compose.yaml"), &cf)
	for _, name := range []string{"postern", "dex", "versitygw", "postgres", "target"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	conds := map[string]bool{"service_started": true, "service_healthy": true, "service_completed_successfully": true}
	// mounts maps "service:container path" to the host path or volume.
	mounts := map[string]string{}
	for name, s := range cf.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("%s: neither image nor build", name)
		}
		if s.Build != nil {
			ctx := filepath.Join(dir, s.Build.Context)
			if fi, err := os.Stat(ctx); err != nil || !fi.IsDir() {
				t.Errorf("%s: build context %s is not a directory", name, s.Build.Context)
			}
			df := s.Build.Dockerfile
			if df == "" {
				df = "Dockerfile"
			}
			dfPath := filepath.Join(ctx, df)
			text := readFile(t, dfPath)
			for _, in := range parseDockerfile(t, text) {
				if in.cmd != "COPY" || strings.Contains(in.args, "--from") {
					continue
				}
				f := strings.Fields(in.args)
				for _, src := range f[:len(f)-1] {
					if _, err := os.Stat(filepath.Join(ctx, src)); err != nil {
						t.Errorf("%s: %s copies %s, missing from its context: %v", name, df, src, err)
					}
				}
				if strings.Contains(text, "ARG PKG") && s.Build.Args["PKG"] == "" {
					t.Errorf("%s: %s needs the PKG build argument", name, df)
				}
			}
		}
		for dep, d := range s.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
			if !conds[d.Condition] {
				t.Errorf("%s depends on %s with condition %q", name, dep, d.Condition)
			}
			if d.Condition == "service_healthy" && cf.Services[dep].Healthcheck == nil {
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, p := range s.Ports {
			f := strings.Split(p, ":")
			if len(f) != 2 {
				t.Errorf("%s: port %q: want HOST:CONTAINER", name, p)
			}
		}
		for _, v := range s.Volumes {
			f := strings.Split(v, ":")
			if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "ro" && f[2] != "rw") {
				t.Errorf("%s: volume %q: want SOURCE:TARGET[:ro]", name, v)
				continue
			}
			src := f[0]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: bind mount source %s: %v", name, src, err)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("%s: named volume %s is not declared under volumes", name, src)
			}
			mounts[name+":"+f[1]] = src
		}
	}

	// postern's config: the mounted file is valid with compose's environment.
	pst := cf.Services["postern"]
	// postern shares Dex's network namespace (one loopback issuer URL for
	// postern and the browser), so Dex publishes postern's ports.
	if pst.NetworkMode != "service:dex" {
		t.Errorf("postern network_mode = %q, want service:dex", pst.NetworkMode)
	}
	if _, ok := pst.DependsOn["dex"]; !ok {
		t.Error("postern must start after dex, whose network namespace it joins")
	}
	for _, p := range []string{"2222:2222", "8080:8080", "5556:5556"} {
		if !slices.Contains(cf.Services["dex"].Ports, p) {
			t.Errorf("dex service does not publish %s", p)
		}
	}
	cfgPath := mounts["postern:/etc/postern/config.yaml"]
	if cfgPath == "" {
		t.Fatal("postern: no config mounted at /etc/postern/config.yaml")
	}
	for k, v := range pst.Environment {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(filepath.Join(dir, cfgPath))
	if err != nil {
		t.Fatalf("compose postern config: %v", err)
	}
	if !strings.HasPrefix(cfg.State, "postgres://") || !strings.Contains(cfg.State, "@postgres:5432/") {
		t.Errorf("state = %q, want the compose postgres service", cfg.State)
	}
	pg := cf.Services["postgres"].Environment
	if !strings.Contains(cfg.State, "//"+pg["POSTGRES_USER"]+":") || !strings.HasSuffix(strings.Split(cfg.State, "?")[0], "/"+pg["POSTGRES_DB"]) ||
		pst.Environment["POSTERN_PG_PASSWORD"] != pg["POSTGRES_PASSWORD"] {
		t.Errorf("state URL %q does not match the postgres service's user, database and password", cfg.State)
	}
	if !strings.HasPrefix(cfg.Storage, "s3://postern-recordings/") || !strings.Contains(cfg.Storage, "endpoint=http://versitygw:7070") {
		t.Errorf("storage = %q, want the versitygw bucket", cfg.Storage)
	}
	vgw := cf.Services["versitygw"].Environment
	if pst.Environment["AWS_ACCESS_KEY_ID"] != vgw["ROOT_ACCESS_KEY"] || pst.Environment["AWS_SECRET_ACCESS_KEY"] != vgw["ROOT_SECRET_KEY"] {
		t.Error("postern's S3 credentials differ from versitygw's root credentials")
	}
	if cfg.DataDir != "/var/lib/postern" || mounts["postern:/var/lib/postern"] != mounts["target:/postern"] {
		t.Errorf("the target must read postern's data volume (target CA public key): postern %q, target %q",
			mounts["postern:/var/lib/postern"], mounts["target:/postern"])
	}
	if len(cfg.Targets) != 1 || cfg.Targets[0].Address != "target:22" {
		t.Fatalf("targets = %+v, want the demo target at target:22", cfg.Targets)
	}
	kh := cfg.Targets[0].KnownHosts
	if filepath.Dir(kh) != "/etc/postern/demo" || mounts["postern:/etc/postern/demo"] != mounts["target:/keys"] {
		t.Errorf("known_hosts %s is not on the volume the target writes its host key to", kh)
	}
	entry := readFile(t, dir, "target/entrypoint.sh")
	for _, want := range []string{"/keys/known_hosts", "/postern/ca/target_ca.pub", "exec /usr/sbin/sshd -D"} {
		if !strings.Contains(entry, want) {
			t.Errorf("target entrypoint does not mention %s", want)
		}
	}
	sshd := readFile(t, dir, "target/sshd_config")
	if !strings.Contains(sshd, "TrustedUserCAKeys /etc/ssh/postern_target_ca.pub") || !strings.Contains(sshd, "PasswordAuthentication no") {
		t.Error("target sshd_config must trust the target CA and refuse passwords")
	}
	if out, err := exec.Command("sh", "-n", filepath.Join(dir, "target/entrypoint.sh")).CombinedOutput(); err != nil {
		t.Errorf("target/entrypoint.sh: sh -n: %v\n%s", err, out)
	}
	if sshdBin, err := exec.LookPath("sshd"); err == nil {
		checkSSHDConfig(t, sshdBin, sshd)
	}

	checkDex(t, dir, cf, cfg)
}

// checkSSHDConfig runs `sshd -t` over the demo target's sshd_config with the
// paths it names created in a temporary directory.
func checkSSHDConfig(t *testing.T, sshdBin, text string) {
	t.Helper()
	tmp := t.TempDir()
	hostKey := filepath.Join(tmp, "host")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	text = strings.ReplaceAll(text, "/keys/ssh_host_ed25519_key", hostKey)
	text = strings.ReplaceAll(text, "/etc/ssh/postern_target_ca.pub", hostKey+".pub")
	cfgFile := filepath.Join(tmp, "sshd_config")
	if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sshdBin, "-t", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Errorf("sshd -t on the demo target's sshd_config: %v\n%s", err, out)
	}
}

// checkDex validates Dex's config against postern's: same issuer and
// client, a public client allowing loopback redirects, users whose groups
// the roles use, and password hashes that match the README's "password".
func checkDex(t *testing.T, dir string, cf composeFile, cfg *config.Config) {
	t.Helper()
	var dex struct {
		Issuer  string `yaml:"issuer"`
		Storage struct {
			Type string `yaml:"type"`
		} `yaml:"storage"`
		Web struct {
			HTTP string `yaml:"http"`
		} `yaml:"web"`
		Logger           map[string]string `yaml:"logger"`
		OAuth2           map[string]any    `yaml:"oauth2"`
		EnablePasswordDB bool              `yaml:"enablePasswordDB"`
		StaticClients    []struct {
			ID           string   `yaml:"id"`
			Name         string   `yaml:"name"`
			Public       bool     `yaml:"public"`
			RedirectURIs []string `yaml:"redirectURIs"`
		} `yaml:"staticClients"`
		StaticPasswords []struct {
			Email    string   `yaml:"email"`
			Hash     string   `yaml:"hash"`
			Username string   `yaml:"username"`
			UserID   string   `yaml:"userID"`
			Groups   []string `yaml:"groups"`
		} `yaml:"staticPasswords"`
	}
	decodeStrict(t, readFile(t, dir, "dex/config.yaml"), &dex)
	iss := cfg.Identity.Issuers[0]
	if dex.Issuer != iss.IssuerURL {
		t.Errorf("dex issuer %q != postern issuer_url %q", dex.Issuer, iss.IssuerURL)
	}
	if !strings.HasSuffix(dex.Web.HTTP, ":5556") || !slices.Contains(cf.Services["dex"].Ports, "5556:5556") {
		t.Errorf("dex listens on %q; the compose file must publish 5556", dex.Web.HTTP)
	}
	if len(dex.StaticClients) != 1 || dex.StaticClients[0].ID != iss.ClientID || !dex.StaticClients[0].Public {
		t.Errorf("dex needs one public client %q", iss.ClientID)
	}
	// Dex allows any loopback redirect to a public client only while its
	// redirectURIs list is empty: postern login's random port and the web
	// UI's callback both need that (TestComposeQuickStartNatively logs in
	// through both).
	if len(dex.StaticClients) == 1 && len(dex.StaticClients[0].RedirectURIs) != 0 {
		t.Errorf("dex client lists redirectURIs %v: postern login and the web UI would get \"Unregistered redirect_uri\"", dex.StaticClients[0].RedirectURIs)
	}
	groups := map[string]bool{}
	for _, u := range dex.StaticPasswords {
		if err := bcrypt.CompareHashAndPassword([]byte(u.Hash), []byte("password")); err != nil {
			t.Errorf("dex user %s: hash does not match the README's password: %v", u.Email, err)
		}
		for _, g := range u.Groups {
			groups[g] = true
		}
	}
	for _, role := range cfg.Roles {
		for _, g := range role.Match.Groups {
			if !groups[g] {
				t.Errorf("role %s matches group %s, which no dex user has", role.Name, g)
			}
		}
	}
}

// --- systemd ---------------------------------------------------------------

func TestSystemdUnit(t *testing.T) {
	path := filepath.Join(root(t), "deploy/systemd/postern.service")
	sections := parseUnit(t, path)
	for _, s := range []string{"Unit", "Service", "Install"} {
		if sections[s] == nil {
			t.Errorf("section [%s] missing", s)
		}
	}
	svc := sections["Service"]
	want := map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
		"ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
		"DynamicUser": "yes", "StateDirectory": "postern", "CapabilityBoundingSet": "",
	}
	for k, v := range want {
		if got := svc[k]; len(got) == 0 || got[len(got)-1] != v {
			t.Errorf("%s=%v, want %q", k, got, v)
		}
	}
	exec0 := strings.Fields(svc["ExecStart"][0])
	if exec0[0] != "/usr/local/bin/postern" || exec0[1] != "serve" || !slices.Contains(exec0, "--config") {
		t.Errorf("ExecStart = %v, want postern serve --config …", exec0)
	}
	if n := len(svc["ExecReload"]); n != 2 || !strings.Contains(svc["ExecReload"][0], "postern check") || !strings.Contains(svc["ExecReload"][1], "-HUP") {
		t.Error("ExecReload must check the configuration, then send SIGHUP (postern reloads its config on SIGHUP)")
	}
	if len(svc["ExecStartPre"]) != 1 || !strings.Contains(svc["ExecStartPre"][0], "postern check --config /etc/postern/config.yaml") {
		t.Error("ExecStartPre must run postern check (like sshd -t)")
	}
	if len(svc["LoadCredential"]) < 3 || len(svc["EnvironmentFile"]) != 0 {
		t.Errorf("secrets must come as credentials (LoadCredential=), not an environment file: %v", svc)
	}
	// systemd's own parser, when present, must accept every directive.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		tmp := t.TempDir()
		unit := filepath.Join(tmp, "postern.service")
		body := strings.ReplaceAll(readFile(t, path), "/usr/local/bin/postern", "/bin/true")
		if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command(sa, "verify", "--man=no", unit).CombinedOutput()
		for line := range strings.Lines(string(out)) {
			if strings.Contains(line, "Unknown key") || strings.Contains(line, "Failed to parse") ||
				strings.Contains(line, "Invalid") {
				t.Errorf("systemd-analyze verify: %s", strings.TrimSpace(line))
			}
		}
	}
}

// --- Helm ------------------------------------------------------------------

// helm returns bin/helm, built from tools/helm if missing.
func helm(t *testing.T) string {
	t.Helper()
	return testutil.Tool(t, "POSTERN_HELM", "helm", "helm", "helm.sh/helm/v3/cmd/helm")
}

// render runs helm template over the chart with extra arguments and returns
// the manifests by "Kind/name".
func render(t *testing.T, args ...string) (map[string]map[string]any, error) {
	t.Helper()
	chart := filepath.Join(root(t), "deploy/helm/postern")
	home := t.TempDir() // helm writes caches and config under these
	cmd := exec.Command(helm(t), append([]string{"template", "demo", chart, "--namespace", "bastion"}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm template: %w: %s", err, stderr.String())
	}
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered manifest is not YAML: %v\n%s", err, out)
		}
		if doc == nil {
			continue
		}
		kind, _ := doc["kind"].(string)
		api, _ := doc["apiVersion"].(string)
		name, _ := dig(doc, "metadata", "name").(string)
		if kind == "" || api == "" || name == "" {
			t.Fatalf("manifest without apiVersion, kind or metadata.name:\n%v", doc)
		}
		if want, ok := apiVersions[kind]; !ok || want != api {
			t.Errorf("%s/%s: apiVersion %s (want %s)", kind, name, api, want)
		}
		key := kind + "/" + name
		if _, dup := docs[key]; dup {
			t.Errorf("%s rendered twice", key)
		}
		docs[key] = doc
	}
	return docs, nil
}

// apiVersions are the kinds the chart may render, with their stable API.
var apiVersions = map[string]string{
	"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1", "ServiceAccount": "v1",
	"PodDisruptionBudget": "policy/v1", "NetworkPolicy": "networking.k8s.io/v1", "Ingress": "networking.k8s.io/v1",
	"PodMonitor": "monitoring.coreos.com/v1", "ServiceMonitor": "monitoring.coreos.com/v1",
}

// required are the values a working install sets (the chart's documented
// choice: no bundled database or bucket, a clear failure instead).
var required = []string{
	"--set", "image.repository=registry.example.com/postern",
	"--set", "config.state=postgres://postern:${env:POSTERN_DATABASE_PASSWORD}@db.internal:5432/postern?sslmode=require",
	"--set", "database.existingSecret=postern-db",
	"--set", "config.storage=s3://postern-recordings/sessions?region=eu-west-1",
}

// dig walks nested maps and lists (string keys, int indexes).
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func mustRender(t *testing.T, args ...string) map[string]map[string]any {
	t.Helper()
	docs, err := render(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func TestHelmLint(t *testing.T) {
	chart := filepath.Join(root(t), "deploy/helm/postern")
	home := t.TempDir()
	cmd := exec.Command(helm(t), append([]string{"lint", "--strict", chart}, required...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

func TestHelmDefaults(t *testing.T) {
	docs := mustRender(t, required...)
	for _, k := range []string{"Deployment/demo-postern", "Service/demo-postern-ssh", "Service/demo-postern-http",
		"ConfigMap/demo-postern", "ServiceAccount/demo-postern", "PodDisruptionBudget/demo-postern",
		"NetworkPolicy/demo-postern"} {
		if docs[k] == nil {
			t.Errorf("%s not rendered", k)
		}
	}
	if docs["Secret/demo-postern-ca"] != nil || docs["Ingress/demo-postern"] != nil {
		t.Error("the CA Secret and the Ingress are rendered only when asked for")
	}
	dep := docs["Deployment/demo-postern"]
	if n, _ := dig(dep, "spec", "replicas").(int); n < 2 {
		t.Errorf("replicas = %v, want at least 2", dig(dep, "spec", "replicas"))
	}
	pod := dig(dep, "spec", "template").(map[string]any)
	podLabels := dig(pod, "metadata", "labels").(map[string]any)
	if !matches(dig(dep, "spec", "selector", "matchLabels"), podLabels) {
		t.Error("the Deployment's selector does not match its pod labels")
	}
	if dig(pod, "spec", "securityContext", "runAsNonRoot") != true || dig(pod, "spec", "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Error("pods must run as non-root with the runtime's seccomp profile")
	}
	// The configuration is checked before postern starts, with the same
	// image, configuration, keys and environment.
	init := dig(pod, "spec", "initContainers", 0)
	main := dig(pod, "spec", "containers", 0)
	if dig(init, "name") != "check-config" || fmt.Sprint(dig(init, "args")) != "[check --config /etc/postern/config.yaml]" ||
		dig(init, "image") != dig(main, "image") || fmt.Sprint(dig(init, "volumeMounts")) != fmt.Sprint(dig(main, "volumeMounts")) ||
		fmt.Sprint(dig(init, "env")) != fmt.Sprint(dig(main, "env")) {
		t.Errorf("init container %v does not run postern check like the main container", init)
	}
	if dig(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable") != 0 {
		t.Error("a rollout must not take a serving pod down before its replacement passed the check")
	}
	c := dig(pod, "spec", "containers", 0).(map[string]any)
	for _, p := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
		if dig(c, p, "httpGet", "path") == nil || dig(c, p, "httpGet", "port") != "http" {
			t.Errorf("container %s must GET a path on the http port", p)
		}
	}
	if dig(c, "livenessProbe", "httpGet", "path") != "/healthz" || dig(c, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Error("liveness must probe /healthz and readiness /readyz")
	}
	if dig(c, "resources", "requests", "cpu") == nil || dig(c, "resources", "requests", "memory") == nil ||
		dig(c, "resources", "limits", "memory") == nil {
		t.Error("container resources must set requests and a memory limit")
	}
	if dig(c, "securityContext", "readOnlyRootFilesystem") != true || dig(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("container must have a read-only root and no privilege escalation")
	}
	ports := map[string]int{}
	for _, p := range dig(c, "ports").([]any) {
		ports[dig(p, "name").(string)] = dig(p, "containerPort").(int)
	}
	if ports["ssh"] != 2222 || ports["http"] != 8080 {
		t.Errorf("container ports = %v, want ssh 2222 and http 8080", ports)
	}
	// Every mount has a volume; the config and CA volumes name rendered or existing objects.
	vols := map[string]map[string]any{}
	for _, v := range dig(pod, "spec", "volumes").([]any) {
		vols[dig(v, "name").(string)] = v.(map[string]any)
	}
	for _, m := range dig(c, "volumeMounts").([]any) {
		if vols[dig(m, "name").(string)] == nil {
			t.Errorf("volumeMount %v has no volume", dig(m, "name"))
		}
	}
	if cm := dig(vols["config"], "configMap", "name"); docs["ConfigMap/"+fmt.Sprint(cm)] == nil {
		t.Errorf("config volume names ConfigMap %v, not rendered", cm)
	}
	if s := dig(vols["ca"], "secret", "secretName"); s != "postern-ca" {
		t.Errorf("ca volume names Secret %v, want the existing postern-ca", s)
	}
	env := map[string]any{}
	for _, e := range dig(c, "env").([]any) {
		env[dig(e, "name").(string)] = e
	}
	if dig(env["POSTERN_ADVERTISE_HOST"], "valueFrom", "fieldRef", "fieldPath") != "status.podIP" {
		t.Error("POSTERN_ADVERTISE_HOST must be the pod IP (the replica's name and address for other replicas)")
	}
	if dig(env["POSTERN_DATABASE_PASSWORD"], "valueFrom", "secretKeyRef", "name") != "postern-db" {
		t.Error("POSTERN_DATABASE_PASSWORD must come from database.existingSecret")
	}
	for _, name := range []string{"demo-postern-ssh", "demo-postern-http"} {
		svc := docs["Service/"+name]
		if !matches(dig(svc, "spec", "selector"), podLabels) {
			t.Errorf("Service %s does not select the pods", name)
		}
		tp, _ := dig(svc, "spec", "ports", 0, "targetPort").(string)
		if _, ok := ports[tp]; !ok {
			t.Errorf("Service %s targets port %q, which the container does not name", name, tp)
		}
	}
	if dig(docs["Service/demo-postern-ssh"], "spec", "type") != "LoadBalancer" {
		t.Error("the SSH Service must be a LoadBalancer")
	}
	if !matches(dig(docs["PodDisruptionBudget/demo-postern"], "spec", "selector", "matchLabels"), podLabels) {
		t.Error("the PodDisruptionBudget does not select the pods")
	}
	np := docs["NetworkPolicy/demo-postern"]
	if !matches(dig(np, "spec", "podSelector", "matchLabels"), podLabels) || len(dig(np, "spec", "ingress").([]any)) == 0 {
		t.Error("the NetworkPolicy must select the pods and allow ingress to ssh and http")
	}
	checkRenderedConfig(t, docs["ConfigMap/demo-postern"])
}

// checkRenderedConfig loads the ConfigMap's config.yaml with postern's own
// config loader, its CA key files replaced by generated ones.
func checkRenderedConfig(t *testing.T, cm map[string]any) {
	t.Helper()
	text, _ := dig(cm, "data", "config.yaml").(string)
	if text == "" {
		t.Fatal("ConfigMap has no config.yaml")
	}
	tmp := t.TempDir()
	for _, name := range []string{"user_ca", "host_ca", "target_ca"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(tmp, name)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		if !strings.Contains(text, "${file:/etc/postern/ca/"+name+"}") {
			t.Errorf("config does not read the CA key %s from the Secret mount", name)
		}
	}
	text = strings.ReplaceAll(text, "/etc/postern/ca/", tmp+"/")
	t.Setenv("POSTERN_DATABASE_PASSWORD", "secret")
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("rendered config: %v\n%s", err, text)
	}
	if cfg.Listen.SSH != ":2222" || cfg.Listen.HTTP != ":8080" || cfg.DataDir != "/var/lib/postern" {
		t.Errorf("listen/data_dir = %+v %q, want the container's ports and volume", cfg.Listen, cfg.DataDir)
	}
	if !strings.HasPrefix(cfg.State, "postgres://") || !strings.HasPrefix(cfg.Storage, "s3://") {
		t.Errorf("state %q / storage %q: replicas must share PostgreSQL and S3", cfg.State, cfg.Storage)
	}
}

// matches reports whether every selector label has the same value in labels.
func matches(sel any, labels map[string]any) bool {
	m, ok := sel.(map[string]any)
	if !ok || len(m) == 0 {
		return false
	}
	for k, v := range m {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestHelmOptions(t *testing.T) {
	docs := mustRender(t, append(required,
		"--set", "ca.create=true", "--set", "ca.userKey=U", "--set", "ca.hostKey=H", "--set", "ca.targetKey=T",
		"--set", "ingress.enabled=true", "--set", "ingress.tlsSecretName=postern-tls",
		"--set", "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/postern",
		"--set", "networkPolicy.restrictEgress=true", "--set", "replicaCount=3",
		"--set", "ca.trusted.user[0]=ssh-ed25519 AAAAold",
	)...)
	sec := docs["Secret/demo-postern-ca"]
	if sec == nil {
		t.Fatal("ca.create=true renders no Secret")
	}
	for k, v := range map[string]string{"user_ca": "U", "host_ca": "H", "target_ca": "T"} {
		if dig(sec, "stringData", k) != v {
			t.Errorf("Secret %s = %v, want %s", k, dig(sec, "stringData", k), v)
		}
	}
	dep := docs["Deployment/demo-postern"]
	var caSecret any
	for _, v := range dig(dep, "spec", "template", "spec", "volumes").([]any) {
		if dig(v, "name") == "ca" {
			caSecret = dig(v, "secret", "secretName")
		}
	}
	if caSecret != "demo-postern-ca" {
		t.Errorf("ca volume mounts %v, want the rendered Secret", caSecret)
	}
	if dig(dep, "spec", "replicas") != 3 {
		t.Errorf("replicas = %v, want 3", dig(dep, "spec", "replicas"))
	}
	if dig(docs["ServiceAccount/demo-postern"], "metadata", "annotations", "eks.amazonaws.com/role-arn") != "arn:aws:iam::1:role/postern" {
		t.Error("ServiceAccount annotations (IRSA) not rendered")
	}
	ing := docs["Ingress/demo-postern"]
	if ing == nil {
		t.Fatal("ingress.enabled renders no Ingress")
	}
	if dig(ing, "spec", "rules", 0, "host") != "postern.example.com" || dig(ing, "spec", "tls", 0, "secretName") != "postern-tls" {
		t.Errorf("Ingress host/tls = %v/%v", dig(ing, "spec", "rules", 0, "host"), dig(ing, "spec", "tls", 0, "secretName"))
	}
	if dig(ing, "spec", "rules", 0, "http", "paths", 0, "backend", "service", "name") != "demo-postern-http" {
		t.Error("Ingress must route to the HTTP Service")
	}
	if types := dig(docs["NetworkPolicy/demo-postern"], "spec", "policyTypes").([]any); !slices.Contains(types, any("Egress")) {
		t.Error("restrictEgress must add the Egress policy type")
	}
	cm, _ := dig(docs["ConfigMap/demo-postern"], "data", "config.yaml").(string)
	if !strings.Contains(cm, "ssh-ed25519 AAAAold") {
		t.Error("ca.trusted.user is not in the rendered config")
	}
}

func TestHelmRequiredValues(t *testing.T) {
	// The defaults: one failure naming every value a working install needs.
	_, err := render(t)
	for _, want := range []string{"postern needs these values:", "image.repository", "config.state", "config.storage"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("default values: err = %v; want it to name %q", err, want)
		}
	}
	withState := []string{"--set", "image.repository=r/p", "--set", "config.storage=s3://b/p",
		"--set", "config.state=postgres://postern:${env:POSTERN_DATABASE_PASSWORD}@db:5432/postern"}
	if _, err := render(t, withState...); err == nil || !strings.Contains(err.Error(), "database.existingSecret") {
		t.Errorf("state with a password reference and no secret: err = %v; want database.existingSecret named (no crash-looping pod)", err)
	}
	if _, err := render(t, "--set", "image.repository=r/p", "--set", "config.storage=s3://b/p", "--set", "config.state=sqlite:///tmp/x.db"); err == nil ||
		!strings.Contains(err.Error(), "config.state must be a postgres:// URL") {
		t.Errorf("SQLite state for replicas: err = %v", err)
	}
	if _, err := render(t, append(required, "--set", "service.ssh.proxyProtocol.enabled=true")...); err == nil ||
		!strings.Contains(err.Error(), "service.ssh.proxyProtocol.trustedProxies") {
		t.Errorf("PROXY protocol without trusted proxies: err = %v", err)
	}
	if _, err := render(t, append(required, "--set", "ca.create=true")...); err == nil || !strings.Contains(err.Error(), "ca.userKey is required") {
		t.Errorf("ca.create without keys: err = %v, want a required-value error", err)
	}
	if _, err := render(t, append(required, "--set", "ca.existingSecret=")...); err == nil || !strings.Contains(err.Error(), "ca.existingSecret is required") {
		t.Errorf("no CA secret: err = %v, want a required-value error", err)
	}
}

// TestHelmProxiesAndMonitors: PROXY protocol and trusted HTTP proxies reach
// postern's configuration; a PodMonitor or a ServiceMonitor (on the HTTP
// Service) scrapes /metrics.
func TestHelmProxiesAndMonitors(t *testing.T) {
	docs := mustRender(t, append(required,
		"--set", "service.ssh.proxyProtocol.enabled=true", "--set", "service.ssh.proxyProtocol.trustedProxies[0]=10.0.0.0/16",
		"--set", "ingress.trustedProxies[0]=10.1.0.0/16",
		"--set", "metrics.podMonitor.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
		"--set", "metrics.serviceMonitor.labels.release=prom")...)
	text, _ := dig(docs["ConfigMap/demo-postern"], "data", "config.yaml").(string)
	tmp := t.TempDir()
	for _, name := range []string{"user_ca", "host_ca", "target_ca"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(tmp, name)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	t.Setenv("POSTERN_DATABASE_PASSWORD", "x")
	cfg, err := config.Parse([]byte(strings.ReplaceAll(text, "/etc/postern/ca/", tmp+"/")))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg.SSH.TrustedProxies) != "[10.0.0.0/16]" || fmt.Sprint(cfg.HTTP.TrustedProxies) != "[10.1.0.0/16]" {
		t.Errorf("trusted proxies in the config: ssh %v http %v", cfg.SSH.TrustedProxies, cfg.HTTP.TrustedProxies)
	}
	podLabels := dig(docs["Deployment/demo-postern"], "spec", "template", "metadata", "labels").(map[string]any)
	pm := docs["PodMonitor/demo-postern"]
	if !matches(dig(pm, "spec", "selector", "matchLabels"), podLabels) || dig(pm, "spec", "podMetricsEndpoints", 0, "port") != "http" ||
		dig(pm, "spec", "podMetricsEndpoints", 0, "path") != "/metrics" {
		t.Errorf("PodMonitor %v", pm)
	}
	sm := docs["ServiceMonitor/demo-postern"]
	httpLabels := dig(docs["Service/demo-postern-http"], "metadata", "labels").(map[string]any)
	sshLabels := dig(docs["Service/demo-postern-ssh"], "metadata", "labels").(map[string]any)
	if !matches(dig(sm, "spec", "selector", "matchLabels"), httpLabels) || matches(dig(sm, "spec", "selector", "matchLabels"), sshLabels) ||
		dig(sm, "metadata", "labels", "release") != "prom" || dig(sm, "spec", "endpoints", 0, "port") != "http" {
		t.Errorf("ServiceMonitor %v must select the HTTP Service only", sm)
	}
}

// TestImagesPinned: every base image of the Dockerfiles is pinned by
// digest (tag@sha256:…), the Dockerfile says how to update the digests,
// Node.js is a supported LTS line (20 reached its end of life in 2026-04),
// the Go toolchain is at least go.mod's, and the image leaves development
// mode out.
func TestImagesPinned(t *testing.T) {
	r := root(t)
	pinned := regexp.MustCompile(`^([a-z0-9./-]+):([A-Za-z0-9._-]+)@sha256:[0-9a-f]{64}$`)
	for _, df := range []string{"Dockerfile", "deploy/compose/tool.Dockerfile", "deploy/compose/target/Dockerfile"} {
		for _, in := range parseDockerfile(t, readFile(t, r, df)) {
			if in.cmd != "FROM" {
				continue
			}
			image := strings.Fields(in.args)[0]
			m := pinned.FindStringSubmatch(image)
			if m == nil {
				t.Errorf("%s: FROM %s is not pinned by digest (name:tag@sha256:…)", df, image)
				continue
			}
			switch m[1] {
			case "node":
				major, _ := strconv.Atoi(strings.SplitN(m[2], "-", 2)[0])
				if major < 22 || major%2 == 1 {
					t.Errorf("%s: node %s is not a supported LTS line (22, 24, …)", df, m[2])
				}
			case "golang":
				if v := strings.SplitN(m[2], "-", 2)[0]; semverLess("v"+v, "v1.26") {
					t.Errorf("%s: golang %s is older than go.mod's Go", df, v)
				}
			}
		}
	}
	text := readFile(t, r, "Dockerfile")
	for _, want := range []string{"docker buildx imagetools inspect", "-tags nodevidp", "ARG GO_TOOLCHAIN=go1.26."} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	gomod := readFile(t, r, "go.mod")
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(gomod)
	tc := regexp.MustCompile(`ARG GO_TOOLCHAIN=go(\S+)`).FindStringSubmatch(text)
	if goLine == nil || tc == nil || semverLess("v"+tc[1], "v"+goLine[1]) {
		t.Errorf("the image's Go toolchain %v is older than go.mod's go %v", tc, goLine)
	}
}

// semverLess compares dotted versions numerically.
func semverLess(a, b string) bool {
	pa, pb := strings.Split(strings.TrimPrefix(a, "v"), "."), strings.Split(strings.TrimPrefix(b, "v"), ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
