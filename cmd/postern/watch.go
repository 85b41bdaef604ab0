package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/players"
)

func newWatchCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a live session read-only",
		Long: `Follow a running session as it is recorded, read-only: nothing typed here
reaches the session. Ends when the session ends, or on q or Ctrl-C. A session
that has already ended is shown as recorded, without pauses.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, ok := players.NormalizeID(args[0])
			if !ok {
				return fmt.Errorf("%q is not a session id", args[0])
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			rc, _, err := c.OpenCast(cmd.Context(), id, true)
			if err != nil {
				return err
			}
			defer rc.Close()
			fmt.Fprintf(g.stderr, "watching session %s read-only; q or Ctrl-C to stop\r\n", id)
			if err := (players.Terminal{In: os.Stdin, Out: g.stdout}).Watch(cmd.Context(), rc); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "\r\nsession %s: watch ended\r\n", id)
			return nil
		},
	}
	cf.register(cmd.Flags())
	return cmd
}
