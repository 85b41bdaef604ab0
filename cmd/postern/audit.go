package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// newAuditCmd is `postern audit`, whose one subcommand checks the audit log.
func newAuditCmd(g *globalFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Check the audit log",
	}
	c.AddCommand(newAuditVerifyCmd(g))
	return c
}

func newAuditVerifyCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit hash chain and every sealed recording digest",
		Long: `verify recomputes the SHA-256 chain of the audit log in the state store,
checks each sealed session's digest against its session.sealed event, re-hashes
every stored recording, and checks the chain of the exported audit file.
It exits 0 if everything is intact and 1 otherwise, naming the first broken
sequence number and every recording that does not match.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAuditVerify(cmd, g)
		},
	}
}

func runAuditVerify(cmd *cobra.Command, g *globalFlags) error {
	ctx := cmd.Context()
	cfg, err := loadConfig(g)
	if err != nil {
		return err
	}
	st, err := state.Open(ctx, cfg.State, state.Options{})
	if err != nil {
		return fmt.Errorf("open state store: %w", err)
	}
	defer st.Close()
	store, err := recorder.OpenStore(ctx, cfg.Storage)
	if err != nil {
		return fmt.Errorf("open recording store: %w", err)
	}
	rep, err := st.Verify(ctx)
	if err != nil {
		return fmt.Errorf("verify audit log: %w", err)
	}
	badObjects, err := recorder.VerifySessions(ctx, st, store)
	if err != nil {
		return fmt.Errorf("verify recordings: %w", err)
	}
	var fileProblem string
	if cfg.Audit.File != "" {
		if fileProblem, err = verifyAuditFile(cfg.Audit.File); err != nil {
			return err
		}
	}

	out := g.stdout
	var problems []string
	if rep.FirstBroken != 0 {
		problems = append(problems, fmt.Sprintf("audit log broken at seq %d: %s", rep.FirstBroken, rep.Reason))
	}
	for _, id := range rep.BadDigests {
		problems = append(problems, fmt.Sprintf("recording %s: index digest does not match its session.sealed event", id))
	}
	for _, id := range badObjects {
		problems = append(problems, fmt.Sprintf("recording %s: stored cast is missing or does not match its digest", id))
	}
	if fileProblem != "" {
		problems = append(problems, "audit file "+cfg.Audit.File+": "+fileProblem)
	}
	if len(problems) == 0 {
		fmt.Fprintf(out, "audit log intact: %d events, %d sealed recordings\n", rep.Events, rep.Sessions)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintln(out, p)
	}
	return exitError{code: 1, msg: fmt.Sprintf("audit verification failed (%d problems in %d events, %d sealed recordings)", len(problems), rep.Events, rep.Sessions)}
}

// verifyAuditFile checks the hash chain of the exported JSONL audit file. A
// missing file is fine (nothing exported yet). The file may start later than
// the store's chain, so the first line's prev is not checked.
func verifyAuditFile(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open audit file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	prev := ""
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.UseNumber()
		var e state.Event
		if err := dec.Decode(&e); err != nil {
			return fmt.Sprintf("line %d is not an audit event", line), nil
		}
		h, err := state.Hash(e)
		if err != nil || h != e.Hash {
			return fmt.Sprintf("line %d (seq %d): hash does not match the event's contents", line, e.Seq), nil
		}
		if prev != "" && e.Prev != prev {
			return fmt.Sprintf("line %d (seq %d): prev does not match the line before", line, e.Seq), nil
		}
		prev = e.Hash
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read audit file: %w", err)
	}
	return "", nil
}
