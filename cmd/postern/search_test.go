package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/search"
)

func TestSessionsSearchCommand(t *testing.T) {
	f := newPlayersFixture(t)
	ix, err := search.New(search.Options{State: f.st, Store: f.store})
	if err != nil {
		t.Fatal(err)
	}
	id := f.record(t, "sudo cat /etc/sudoers", "root ALL=(ALL) ALL\r\n")
	other := f.record(t, "uptime", "up 3 days\r\n")
	for _, s := range []string{id, other} {
		if _, err := ix.Index(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	dirFlag := "--dir=" + f.profile

	out, _, err := runClient(t, newSessionsCmd, "search", dirFlag, "/etc/sudoers")
	if err != nil || !strings.HasPrefix(out, "SESSION ") || !strings.Contains(out, id) || strings.Contains(out, other) ||
		!strings.Contains(out, "sudo cat /etc/sudoers") || !strings.Contains(out, " 0:00 ") {
		t.Errorf("sessions search: %v\n%s", err, out)
	}
	out, _, err = runClient(t, newSessionsCmd, "search", dirFlag, "--json", "--identity", "alice@example.com", "--target", "web-1",
		"--since", "1h", "root", "ALL")
	var hits []players.SearchHit
	if err != nil || json.Unmarshal([]byte(out), &hits) != nil || len(hits) != 1 || hits[0].Session != id || hits[0].Kind != "output" {
		t.Errorf("sessions search --json: %v\n%s", err, out)
	}
	_, stderr, err := runClient(t, newSessionsCmd, "search", dirFlag, "kubectl")
	if err != nil || !strings.Contains(stderr, "nothing matches") {
		t.Errorf("no hits: %v %q", err, stderr)
	}
	_, _, err = runClient(t, newSessionsCmd, "search", dirFlag, `"unclosed`)
	if err == nil || !strings.Contains(err.Error(), "quote is not closed") {
		t.Errorf("bad query: %v", err)
	}
	if _, _, err := runClient(t, newSessionsCmd, "search", dirFlag); err == nil {
		t.Error("search without a query succeeded")
	}
}
