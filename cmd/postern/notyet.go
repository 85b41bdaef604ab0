package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// laterCommands registers the commands of DESIGN §3 that this build does not
// have yet. Each says so plainly and exits 2, so scripts can tell "missing"
// from "failed".
func laterCommands(g *globalFlags) []*cobra.Command {
	later := []struct{ use, short, issue string }{
		{"approvals", "List and decide pending approvals", "approvals"},
		{"request TARGET", "Ask for just-in-time access to a target", "approvals"},
	}
	var cmds []*cobra.Command
	for _, l := range later {
		cmds = append(cmds, &cobra.Command{
			Use:                l.use,
			Short:              l.short + " (not built yet)",
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return exitError{code: 2, msg: fmt.Sprintf("%s is not built yet (planned with the %s work); see docs/roadmap.md", cmd.Name(), l.issue)}
			},
		})
	}
	return cmds
}
