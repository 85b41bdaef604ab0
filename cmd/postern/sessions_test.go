package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// playersFixture serves the sessions API over a real recorder and stores
// and writes a login profile for an auditor.
type playersFixture struct {
	rec     *recorder.Recorder
	st      *state.Store
	store   recorder.Store
	url     string
	profile string
}

func newPlayersFixture(t *testing.T) *playersFixture {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fs, err := recorder.NewFileStore(filepath.Join(dir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := recorder.New(recorder.Options{Store: fs, State: st, SpoolDir: filepath.Join(dir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := certs.LoadAuthority(config.CAs{}, filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	api := players.NewAPI(players.APIOptions{
		Auth:        &certs.APIAuth{Authority: auth},
		Permissions: func(certs.Identity) []string { return []string{players.PermAuditor} },
		State:       st, Store: fs, Follow: rec.Follow,
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/sessions", api)
	mux.Handle("/v1/sessions/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &playersFixture{rec: rec, st: st, store: fs, url: srv.URL, profile: writeAuditorProfile(t, auth, srv.URL)}
}

// writeAuditorProfile writes a profile directory as postern login would.
func writeAuditorProfile(t *testing.T, auth *certs.Authority, bastion string) string {
	t.Helper()
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	now := time.Now()
	id := certs.Identity{Issuer: "corp", Subject: "audra", Username: "audra@example.com", Kind: certs.KindHuman}
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: 1, CertType: ssh.UserCert, KeyId: "audra",
		ValidPrincipals: []string{id.Username},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{certs.IdentityExtension: certs.EncodeIdentity(id)}},
	}
	if err := cert.SignCert(rand.Reader, auth.User.Signer()); err != nil {
		t.Fatal(err)
	}
	blk, _ := ssh.MarshalPrivateKey(priv, "audra")
	pj, _ := json.Marshal(map[string]any{"bastion": bastion, "bastion_host": "127.0.0.1", "ssh_address": "127.0.0.1:2222",
		"username": id.Username, "principals": []string{id.Username},
		"valid_after": now.Add(-time.Minute).UTC(), "valid_before": now.Add(time.Hour).UTC()})
	for name, data := range map[string][]byte{
		login.KeyFileName: pem.EncodeToMemory(blk), login.CertFileName: ssh.MarshalAuthorizedKey(cert), login.ProfileFileName: pj,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (f *playersFixture) record(t *testing.T, command string, out ...string) string {
	t.Helper()
	s, err := f.rec.Start(context.Background(), recorder.Meta{Identity: "alice@example.com", Issuer: "corp", Role: "ops",
		Target: "web-1", Login: "deploy", Kind: state.KindExec, Command: command, Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if err := s.Output([]byte(o)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Marker("command: " + command); err != nil {
		t.Fatal(err)
	}
	zero := 0
	sealed, err := s.Finish(context.Background(), recorder.Result{ExitStatus: &zero})
	if err != nil {
		t.Fatal(err)
	}
	return sealed.ID
}

// runClient runs one client command in-process and returns its stdout.
func runClient(t *testing.T, newCmd func(*globalFlags) *cobra.Command, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	g := &globalFlags{stdout: &stdout, stderr: &stderr}
	cmd := newCmd(g)
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func TestSessionsCommands(t *testing.T) {
	f := newPlayersFixture(t)
	id := f.record(t, "uptime", "up 3 days\r\n")
	other := f.record(t, "hostname", "web-1\r\n")
	dirFlag := "--dir=" + f.profile

	out, _, err := runClient(t, newSessionsCmd, "ls", dirFlag)
	if err != nil {
		t.Fatalf("sessions ls: %v", err)
	}
	if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, id) || !strings.Contains(out, other) || !strings.Contains(out, "finished (0)") {
		t.Errorf("sessions ls printed:\n%s", out)
	}
	out, _, err = runClient(t, newSessionsCmd, "ls", dirFlag, "--grep", "upti", "--json", "--since", "1h")
	var rows []state.Session
	if err != nil || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0].ID != id {
		t.Errorf("sessions ls --grep --json: %v\n%s", err, out)
	}
	out, _, err = runClient(t, newSessionsCmd, "show", dirFlag, id)
	if err != nil || !strings.Contains(out, "integrity: ok") || !strings.Contains(out, "command:   uptime") {
		t.Errorf("sessions show: %v\n%s", err, out)
	}
	out, _, err = runClient(t, newSessionsCmd, "show", dirFlag, "--json", "--verify", id)
	var d players.SessionDetail
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || d.Integrity.Checked != "sha256" || d.Integrity.Status != "ok" {
		t.Errorf("sessions show --json --verify: %v\n%s", err, out)
	}

	// Export v2 and v3; asciinema (Debian 2.2) plays the v2 file.
	v2 := filepath.Join(t.TempDir(), "s.cast")
	if _, stderr, err := runClient(t, newSessionsCmd, "export", dirFlag, id, "-o", v2); err != nil || !strings.Contains(stderr, "wrote "+v2) {
		t.Fatalf("sessions export: %v %s", err, stderr)
	}
	v3 := filepath.Join(t.TempDir(), "s3.cast")
	if _, _, err := runClient(t, newSessionsCmd, "export", dirFlag, id, "-o", v3, "--format", "v3"); err != nil {
		t.Fatalf("sessions export --format v3: %v", err)
	}
	b, _ := os.ReadFile(v3)
	if !bytes.HasPrefix(b, []byte(`{"version":3`)) || !bytes.Contains(b, []byte(`"x", "0"]`)) {
		t.Errorf("v3 export:\n%s", b)
	}
	if st, _ := os.Stat(v2); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("export file mode: %v", st)
	}
	if bin, err := exec.LookPath("asciinema"); err == nil {
		cmd := exec.Command(bin, "play", "-i", "0.1", v2)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "up 3 days") {
			t.Errorf("asciinema play of the export: %v\n%s", err, out)
		}
	}

	// play, from the API by id and from the exported file; stdin is not a
	// terminal in tests, so it plays straight through.
	for _, arg := range []string{id, v2} {
		out, _, err = runClient(t, newPlayCmd, dirFlag, "--speed", "16", arg)
		if err != nil || !strings.Contains(out, "up 3 days") {
			t.Errorf("play %s: %v\n%q", arg, err, out)
		}
	}
	// watch of a finished session shows the recording and ends.
	out, _, err = runClient(t, newWatchCmd, dirFlag, id)
	if err != nil || !strings.Contains(out, "up 3 days") {
		t.Errorf("watch: %v\n%q", err, out)
	}

	// Refusals.
	for _, args := range [][]string{
		{"show", dirFlag, "../../etc/passwd"},
		{"export", dirFlag, id, "--format", "v4"},
		{"show", dirFlag, "01ARZ3NDEKTSV4RRFFQ69G5FAV"},
	} {
		if _, _, err := runClient(t, newSessionsCmd, args...); err == nil {
			t.Errorf("sessions %v succeeded", args)
		}
	}
	if _, _, err := runClient(t, newPlayCmd, dirFlag, "no-such-file"); err == nil {
		t.Error("play of a missing file succeeded")
	}
}
