package server_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/state"
)

// TestMaskingCoversEveryStoredCopy: a secret in an exec command line (held
// for approval on the way) and a secret split across two writes of an
// interactive session, with a keystroke between the halves, are masked in
// every byte postern stores: the S3 objects (cast and metadata), the state
// store (sessions index, audit events, approval requests), the audit file,
// the spool, the Slack message and postern's log.
func TestMaskingCoversEveryStoredCopy(t *testing.T) {
	const secret = "AKIAZ7Q3R5T2W4Y6U8I0"
	const half = "AKIAZ7Q3" // the first half of the split secret, as printed
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "recordings")
	s3.SetAWSEnv(t)
	dataDir := t.TempDir()
	e := newGateEnvWith(t, dataDir, []config.Rule{
		{Match: `deploy-with`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
	}, func(cfg *config.Config) {
		cfg.Storage = "s3://recordings/rec?endpoint=" + url.QueryEscape(s3.Endpoint()) + "&path_style=true&region=" + s3.Region()
		cfg.Masking = config.Masking{Rules: []config.MaskRule{{Detector: "aws_key"}}}
	})

	// The exec: held for approval, approved, run.
	res := e.user.SSHAsync(nil, "web-1", "echo deploy-with "+secret)
	msg := e.slack.NextMessage()
	slackJSON, _ := json.Marshal(msg)
	id := ""
	for _, bl := range msg["blocks"].([]any) {
		if b := bl.(map[string]any); b["type"] == "actions" {
			id = b["elements"].([]any)[0].(map[string]any)["value"].(string)
		}
	}
	e.slack.Click(e.svc, "UCAROL", approval.SlackActionApprove, id)
	if r := waitResult(t, res); r.Code != 0 || !strings.Contains(string(r.Stdout), "deploy-with [MASKED:aws_key]") {
		t.Fatalf("exec: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	e.sessionEnd()

	// The shell: the secret printed in two writes, a keystroke between them
	// (not echoed: the terminal's echo is off while it runs).
	c := e.user.PTY(t, 100, 30, "-tt", "web-1")
	c.Send("stty -echo; printf '\\x41KIAZ7Q3'; sleep 2; printf 'R5T2W4Y6U8I\\x30\\n'; stty echo; echo DONE-$((40+2))\r")
	c.Expect(half) // the first half reached the client
	c.Send("\r")   // one byte of input while the output pauses
	c.Expect(`DONE-42`)
	c.Send("exit\r")
	c.Wait()
	e.sessionEnd()

	// Every stored byte.
	check := func(what string, data []byte) {
		t.Helper()
		for _, bad := range []string{secret, half} {
			if bytes.Contains(data, []byte(bad)) {
				t.Errorf("%s holds %q", what, bad)
			}
		}
	}
	walk := func(root string) {
		t.Helper()
		n := 0
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(p)
			if err == nil {
				check(p, data)
				n++
			}
			return nil
		})
		if n == 0 {
			t.Errorf("no files under %s", root)
		}
	}
	walk(s3.Dir()) // the cast and metadata objects
	walk(dataDir)  // state store (index, audit, approvals), audit file, spool
	check("the Slack message", slackJSON)
	check("postern's log", []byte(e.svc.Logs()))
	// The masked copies are there, and say so.
	sessions, _ := e.svc.State.ListSessions(t.Context(), state.SessionFilter{})
	for _, s := range sessions {
		if !s.Masked {
			t.Errorf("session %s (%s %q) is not marked masked", s.ID, s.Kind, s.Command)
		}
		if s.Kind == state.KindExec && s.Command != "echo deploy-with [MASKED:aws_key]" {
			t.Errorf("index command %q; want it masked", s.Command)
		}
	}
	if len(sessions) != 2 {
		t.Errorf("%d sessions indexed; want 2", len(sessions))
	}
}
