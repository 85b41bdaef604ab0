package main

import (
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/posternhq/postern/internal/buildinfo"
	"github.com/posternhq/postern/mcpserver"
)

func newMCPCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "mcp [--bastion URL] [--dir DIR]",
		Short: "Serve the MCP tools on stdin/stdout, for an agent runtime that launches it",
		Long: `Serve postern's Model Context Protocol tools over stdio: list_targets, run,
wait_run, wait_approval, session_output, request_access and list_sessions.
An agent runtime launches it as an MCP server; it acts with the profile that
postern login (or postern agent, which keeps it fresh) wrote, through the
bastion's SSH and HTTP API like any client: every command is policy-checked,
recorded, masked and held for approval exactly as ssh -J would be. Logs go
to stderr; stdout carries the protocol. See docs/agents.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			caller, err := mcpserver.OpenProfile(cf.bastion, cf.dir)
			if err != nil {
				return err
			}
			srv, err := mcpserver.New(mcpserver.Options{Caller: caller, Version: buildinfo.Get().Version, Log: log})
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context(), &sdk.StdioTransport{})
		},
	}
	cf.register(cmd.Flags())
	return cmd
}
