package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

func TestCARevoke(t *testing.T) {
	dir := t.TempDir()
	revoke := func(args ...string) (string, error) {
		var out bytes.Buffer
		g := &globalFlags{Dev: true, DataDir: dir, stdout: &out, stderr: &out}
		c := newCACmd(g)
		c.SetOut(&out)
		c.SetErr(&out)
		c.SetArgs(append([]string{"revoke"}, args...))
		err := c.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := revoke("18446744073709551615", "--reason", "laptop lost")
	if err != nil || !strings.Contains(out, "revoked certificate serial 18446744073709551615") {
		t.Fatalf("ca revoke = %q, %v", out, err)
	}
	if _, err := revoke("18446744073709551615"); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	for _, bad := range []string{"0", "abc", "0x10", "1.5"} {
		if _, err := revoke(bad); err == nil || !strings.Contains(err.Error(), "not a certificate serial") {
			t.Errorf("ca revoke %s: %v; want a serial error", bad, err)
		}
	}

	cfg, err := config.Dev(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := state.Open(ctx, cfg.State, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ok, err := st.IsRevoked(ctx, 18446744073709551615); err != nil || !ok {
		t.Errorf("IsRevoked = %v, %v; want true", ok, err)
	}
	evs, err := st.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var revoked []state.Event
	for _, e := range evs {
		if e.Type == state.EventCertRevoked {
			revoked = append(revoked, e)
		}
	}
	if len(revoked) != 1 || revoked[0].Details["serial"] != "18446744073709551615" || revoked[0].Details["reason"] != "laptop lost" {
		t.Errorf("cert.revoked events = %+v; want exactly one with serial and reason", revoked)
	}
}
