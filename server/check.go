package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// CheckOptions selects what Check does beyond reading files.
type CheckOptions struct {
	// Connect also reaches the state store and the recording store (no
	// migration is applied, nothing is written), as a start would.
	Connect bool
}

// Check validates a loaded configuration the way a start would, without
// serving and without side effects: the CA keys and every key or file it
// references (targets' host keys, known_hosts files and private keys) must
// parse, the policy and the masking rules must compile, and with Connect the
// stores must answer. It is `postern check` (like sshd -t), and what a
// SIGHUP reload runs before it applies anything. Problems are joined, each
// naming its key path.
func Check(ctx context.Context, cfg *config.Config, opts CheckOptions) error {
	var errs []error
	if err := certs.CheckCAs(cfg.CA, cfg.DataDir); err != nil {
		errs = append(errs, err)
	}
	if _, err := policy.New(cfg); err != nil {
		errs = append(errs, err)
	}
	if _, err := guardrails.NewPolicy(cfg); err != nil {
		errs = append(errs, fmt.Errorf("masking: %w", err))
	}
	for i, t := range cfg.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		if t.KnownHosts != "" {
			if _, err := knownhosts.New(t.KnownHosts); err != nil {
				errs = append(errs, fmt.Errorf("%s.known_hosts: %w", p, err))
			}
		}
		if t.PrivateKey != "" {
			if _, err := ssh.ParsePrivateKey([]byte(t.PrivateKey)); err != nil {
				errs = append(errs, fmt.Errorf("%s.private_key: not an unencrypted private key", p))
			}
		}
		for name, argv := range t.Subsystems {
			if _, err := os.Stat(argv[0]); err != nil {
				errs = append(errs, fmt.Errorf("%s.subsystems.%s: %s: %w", p, name, argv[0], err))
			}
		}
	}
	if opts.Connect {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := state.Ping(cctx, cfg.State); err != nil {
			errs = append(errs, fmt.Errorf("state: %w", err))
		}
		if _, err := recorder.OpenStore(cctx, cfg.Storage); err != nil {
			errs = append(errs, fmt.Errorf("storage: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ReloadPlan is what a configuration reload changes: the keys whose new
// values are applied in place, and the keys whose new values take effect
// only after a restart (the running values stay until then).
type ReloadPlan struct {
	// Applied are the changed keys the reload applies.
	Applied []string
	// RestartNeeded are the changed keys that need a restart.
	RestartNeeded []string
}

// hotKeys are the configuration keys a reload applies in place: the
// policy (targets, roles with their rules and masking), the global masking
// rules, per-source penalties and upstream login reuse.
var hotKeys = []string{"targets", "roles", "masking", "ssh.penalty", "ssh.upstream_reuse"}

// PlanReload compares the running configuration with a new one and returns
// what a reload would apply and what needs a restart, plus the
// configuration to run with: the running one with only the applied keys
// taken from next.
func PlanReload(running, next *config.Config) (ReloadPlan, *config.Config) {
	var plan ReloadPlan
	merged := *running
	changed := changedKeys(reflect.ValueOf(*running), reflect.ValueOf(*next), "")
	for _, k := range changed {
		if slices.Contains(hotKeys, k) {
			plan.Applied = append(plan.Applied, k)
		} else {
			plan.RestartNeeded = append(plan.RestartNeeded, k)
		}
	}
	merged.Targets, merged.Roles, merged.Masking = next.Targets, next.Roles, next.Masking
	merged.SSH.Penalty, merged.SSH.UpstreamReuse = next.SSH.Penalty, next.SSH.UpstreamReuse
	return plan, &merged
}

// splitKeys are the sections whose keys are compared one by one (their
// subkeys differ in whether a reload applies them, or are worth naming).
var splitKeys = map[string]bool{"listen": true, "ca": true, "identity": true, "ssh": true, "recording": true, "approvals": true, "replicas": true}

// changedKeys returns the key paths whose values differ between a and b
// (structs of the same type), down to the sections of splitKeys.
func changedKeys(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		av, bv := a.Field(i), b.Field(i)
		if reflect.DeepEqual(av.Interface(), bv.Interface()) {
			continue
		}
		if f.Type.Kind() == reflect.Struct && splitKeys[key] && f.Type != reflect.TypeFor[config.Duration]() {
			out = append(out, changedKeys(av, bv, key)...)
			continue
		}
		out = append(out, key)
	}
	return out
}
