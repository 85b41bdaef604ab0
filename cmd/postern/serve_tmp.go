package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Temporary until bastion.Service compiles (lead is wiring it).
func newServeCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{Use: "serve", RunE: func(*cobra.Command, []string) error { return errors.New("wiring in progress") }}
}
