package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/players"
)

func newPlayCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var speed, idle float64
	cmd := &cobra.Command{
		Use:   "play ID|FILE|URL [--speed X] [--idle-time-limit S]",
		Short: "Replay a recorded session in the terminal",
		Long: `Replay a session in the terminal: a session id (fetched from the bastion with
the postern login profile), a local .cast file, or an http(s) URL of one.

Keys: space pause/resume, . step (while paused), ←/→ seek 5 s,
[ / ] previous/next marker, + / - speed, q quit.
Without a terminal on standard input the cast plays straight through.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if speed <= 0 {
				return fmt.Errorf("--speed %v: want a positive number", speed)
			}
			if idle < 0 {
				return fmt.Errorf("--idle-time-limit %v: want zero or more seconds", idle)
			}
			ctx := cmd.Context()
			arg := args[0]
			var src players.Source
			if _, err := os.Stat(arg); err == nil {
				src = players.FileSource(arg)
			} else if strings.HasPrefix(arg, "http://") || strings.HasPrefix(arg, "https://") {
				src = players.URLSource(ctx, nil, arg)
			} else if _, ok := players.NormalizeID(arg); ok {
				c, err := cf.client()
				if err != nil {
					return err
				}
				src = c.Source(ctx, arg)
			} else {
				return fmt.Errorf("%s: %w", arg, errNoSession)
			}
			p, err := players.New(src, players.Options{
				Speed:         speed,
				IdleTimeLimit: time.Duration(idle * float64(time.Second)),
			})
			if err != nil {
				return err
			}
			defer p.Close()
			return players.Terminal{In: os.Stdin, Out: g.stdout}.Play(ctx, p)
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().Float64Var(&speed, "speed", 1, "playback speed factor")
	cmd.Flags().Float64Var(&idle, "idle-time-limit", 0, "shorten pauses longer than this many seconds (default: the cast's own limit, if any)")
	return cmd
}
