package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Exit statuses of `postern request` (the same as a held command's, see
// docs/exit-codes.md).
const (
	exitRequestDenied  = 121
	exitRequestTimeout = 122
)

// approvalsClient opens the profile's API client.
func (c *clientFlags) api() (*login.APIClient, error) {
	return login.OpenAPIClient(c.bastion, c.dir, login.APIClientOptions{})
}

func newApprovalsCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List and decide approval requests",
		Long: `List approval requests (held commands and access requests) and approve or
deny them. Deciding needs the approver (or admin) permission and, for a
command, membership of one of its rule's approvers; nobody decides their own
request. Authenticates with the profile of postern login.`,
	}
	cmd.AddCommand(newApprovalsLsCmd(g), newApprovalsShowCmd(g), newApprovalsDecideCmd(g, true), newApprovalsDecideCmd(g, false),
		newApprovalsRevokeCmd(g))
	return cmd
}

func newApprovalsLsCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var status string
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [--all | --status S] [--json]",
		Short: "List pending approval requests (newest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := cf.api()
			if err != nil {
				return err
			}
			if all {
				status = ""
			}
			var rows []state.Approval
			if err := api.GetJSON(cmd.Context(), login.Query("/v1/approvals", url.Values{"status": {status}}), &rows); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			return writeApprovals(g.stdout, rows, time.Now())
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&status, "status", state.ApprovalPending, "pending, approved, denied, timed_out or canceled")
	cmd.Flags().BoolVar(&all, "all", false, "every status")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// writeApprovals prints requests as a table.
func writeApprovals(w io.Writer, rows []state.Approval, now time.Time) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "no approval requests")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tREQUESTER\tTARGET\tWHAT\tEXPIRES")
	for _, a := range rows {
		what := a.Command
		if a.Kind == state.ApprovalAccess {
			what = fmt.Sprintf("access for %s: %s", a.Duration, a.Reason)
		}
		if len(what) > 60 {
			what = what[:57] + "..."
		}
		exp := "-"
		if a.Status == state.ApprovalPending {
			exp = "in " + a.Expires.Sub(now).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Status, printable(a.Requester), printable(a.Target), printable(what), exp)
	}
	return tw.Flush()
}

// printable replaces control characters so that a table cannot drive the
// terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func newApprovalsShowCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "show ID [--wait 30s]",
		Short: "Print one request as JSON (waiting for its decision with --wait)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := cf.api()
			if err != nil {
				return err
			}
			q := url.Values{}
			if wait > 0 {
				q.Set("wait", wait.String())
			}
			var a state.Approval
			if err := api.GetJSON(cmd.Context(), login.Query("/v1/approvals/"+url.PathEscape(args[0]), q), &a); err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(a)
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for a pending request to be decided")
	return cmd
}

func newApprovalsDecideCmd(g *globalFlags, approve bool) *cobra.Command {
	var cf clientFlags
	var reason string
	verb := "deny"
	if approve {
		verb = "approve"
	}
	cmd := &cobra.Command{
		Use:   verb + " ID [--reason R]",
		Short: strings.ToUpper(verb[:1]) + verb[1:] + " a pending request",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := cf.api()
			if err != nil {
				return err
			}
			var a state.Approval
			if err := api.PostJSON(cmd.Context(), "/v1/approvals/"+url.PathEscape(args[0])+"/"+verb,
				map[string]string{"reason": reason}, &a); err != nil {
				return err
			}
			if a.Status == state.ApprovalPending {
				_, err = fmt.Fprintf(g.stdout, "%s: your approval is recorded (%d of %d)\n", a.ID, a.Approvals(), a.Required)
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s: %s\n", a.ID, strings.ReplaceAll(a.Status, "_", " "))
			return err
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&reason, "reason", "", "a note recorded with the decision")
	return cmd
}

func newApprovalsRevokeCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "End the just-in-time access an approved access request granted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := cf.api()
			if err != nil {
				return err
			}
			var res struct{ Grant, Status string }
			if err := api.PostJSON(cmd.Context(), "/v1/approvals/"+url.PathEscape(args[0])+"/revoke", struct{}{}, &res); err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s: access revoked\n", args[0])
			return err
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

func newRequestCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var dur time.Duration
	var reason, loginName string
	var noWait, asJSON bool
	cmd := &cobra.Command{
		Use:   "request TARGET --for DUR --reason TEXT [--login L] [--no-wait] [--json]",
		Short: "Ask for just-in-time access to a target",
		Long: `Ask for just-in-time access to a target. Approvers are notified (Slack,
webhooks) and decide with postern approvals or in Slack; once approved, the
target is reachable for the requested duration (with your roles' logins, or
--login). Waits for the decision unless --no-wait: exits 0 when approved,
121 when denied, 122 when the request timed out.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dur <= 0 {
				return &usererr.Error{Exit: 2, Msg: "--for is required (e.g. --for 1h)"}
			}
			if strings.TrimSpace(reason) == "" {
				return &usererr.Error{Exit: 2, Msg: "--reason is required"}
			}
			api, err := cf.api()
			if err != nil {
				return err
			}
			var a state.Approval
			if err := api.PostJSON(cmd.Context(), "/v1/approvals", map[string]string{
				"target": args[0], "login": loginName, "for": dur.String(), "reason": reason}, &a); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(g.stderr, "postern: access request %s for %s of %s is waiting for approval\n", a.ID, dur, printable(args[0]))
			}
			for !noWait && a.Status == state.ApprovalPending {
				if err := api.GetJSON(cmd.Context(), "/v1/approvals/"+url.PathEscape(a.ID)+"?wait=55s", &a); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(a); err != nil {
					return err
				}
			}
			switch a.Status {
			case state.ApprovalApproved:
				if !asJSON {
					fmt.Fprintf(g.stdout, "%s: approved by %s; %s is yours until %s\n", a.ID, printable(a.DecidedBy),
						printable(a.Target), a.Decided.Add(a.Duration).Local().Format(time.RFC3339))
				}
			case state.ApprovalDenied:
				return &usererr.Error{Exit: exitRequestDenied, Msg: "access request denied by " + printable(a.DecidedBy)}
			case state.ApprovalTimedOut, state.ApprovalCanceled:
				return &usererr.Error{Exit: exitRequestTimeout, Msg: "access request " + strings.ReplaceAll(a.Status, "_", " ")}
			}
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().DurationVar(&dur, "for", 0, "how long the access should last (e.g. 1h)")
	cmd.Flags().StringVar(&reason, "reason", "", "why you need the access (shown to approvers)")
	cmd.Flags().StringVar(&loginName, "login", "", "the login wanted on the target (default: your roles' logins)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "print the request and return without waiting")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the request as JSON")
	return cmd
}
