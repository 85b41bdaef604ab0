package server

import (
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/config"
)

// TestPlanReload: each changed key is either applied (policy, masking,
// penalties, upstream reuse) or reported as needing a restart, naming the
// subkey; the configuration to run with takes only the applied keys.
func TestPlanReload(t *testing.T) {
	parse := func(src string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := "targets: [{name: a, kind: command, command: [sh]}]\nroles: [{name: r, match: {groups: [g]}, targets: [a], logins: [x]}]\n"
	tests := []struct {
		name                   string
		next                   string
		applied, restartNeeded string
	}{
		{"unchanged", base, "", ""},
		{"masking", base + "masking: {rules: [{detector: jwt}]}\n", "masking", ""},
		{"targets and roles", "targets: [{name: b, kind: command, command: [sh]}]\nroles: [{name: r, match: {groups: [g]}, targets: [b], logins: [x]}]\n", "targets,roles", ""},
		{"penalty", base + "ssh: {penalty: {max_failures: 3}, idle_timeout: 1h}\n", "ssh.penalty", "ssh.idle_timeout"},
		{"restart only", base + "listen: {ssh: ':2200'}\nidentity: {cert_ttl: {human: 1h}}\nca: {host: {algorithm: rsa-3072}}\nstorage: file:///tmp/x\nreplicas: {heartbeat: 1s}\n",
			"", "listen.ssh,ssh_address,ca.host,identity.cert_ttl,storage,replicas.heartbeat"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			running, next := parse(base), parse(tc.next)
			plan, merged := PlanReload(running, next)
			if got := strings.Join(plan.Applied, ","); got != tc.applied {
				t.Errorf("applied %q; want %q", got, tc.applied)
			}
			if got := strings.Join(plan.RestartNeeded, ","); got != tc.restartNeeded {
				t.Errorf("restart needed %q; want %q", got, tc.restartNeeded)
			}
			if merged.Listen != running.Listen || merged.Identity.CertTTL != running.Identity.CertTTL || merged.Storage != running.Storage {
				t.Error("the merged configuration took a key that needs a restart")
			}
			if len(merged.Targets) != len(next.Targets) || merged.Targets[0].Name != next.Targets[0].Name {
				t.Error("the merged configuration did not take the new targets")
			}
		})
	}
}
