package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/posternhq/postern/internal/usererr"

	"github.com/spf13/cobra"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

func newLockCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock",
		Short: "Lock an identity, a role, a target or a session (the kill switch)",
		Long: `Lock an identity (issuer + subject), a role, a target or a single session.
While a lock is in force, the sessions it matches end within a second on every
replica (the user reads "postern: <what> is locked: <reason>" and ssh exits
124), and a locked identity gets no new certificate, no SSH login, no API call
and no web session. Every lock and removal is audited.

Locking needs the admin permission; terminating a session (lock session) also
the moderator permission. Authenticates with the profile of postern login.`,
	}
	cmd.AddCommand(
		newLockMakeCmd(g, state.LockIdentity),
		newLockMakeCmd(g, state.LockRole),
		newLockMakeCmd(g, state.LockTarget),
		newLockMakeCmd(g, state.LockSession),
		newLockLsCmd(g),
		newLockRmCmd(g),
	)
	return cmd
}

// newLockMakeCmd is `postern lock identity|role|target|session`.
func newLockMakeCmd(g *globalFlags, kind string) *cobra.Command {
	var cf clientFlags
	var reason, issuer, subject, username string
	var dur time.Duration
	var asJSON bool
	use, short, args := kind+" NAME --reason R [--for DUR]", "", cobra.ExactArgs(1)
	switch kind {
	case state.LockIdentity:
		use = "identity --issuer NAME --subject SUB [--username U] --reason R [--for DUR]"
		short, args = "Lock one identity: its sessions end, it gets no certificate, login, API call or web session", cobra.NoArgs
	case state.LockRole:
		short = "Lock every identity a role matches"
	case state.LockTarget:
		short = "Lock a target: its sessions end and new ones are refused"
	case state.LockSession:
		use = "session ID --reason R"
		short = "Terminate one running session"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return &usererr.Error{Exit: 2, Msg: "--reason is required"}
			}
			body := lock.CreateBody{Kind: kind, Reason: reason}
			if dur > 0 {
				body.For = dur.String()
			}
			if kind == state.LockIdentity {
				if issuer == "" || subject == "" {
					return &usererr.Error{Exit: 2, Msg: "--issuer and --subject are required (the issuer's configured name and the token's sub claim)"}
				}
				body.Issuer, body.Subject, body.Username = issuer, subject, username
			} else {
				body.Name = args[0]
			}
			api, err := cf.api()
			if err != nil {
				return err
			}
			var lk state.Lock
			if err := api.PostJSON(cmd.Context(), "/v1/locks", body, &lk); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(lk)
			}
			until := "until removed (postern lock rm " + lk.ID + ")"
			if !lk.Expires.IsZero() {
				until = "until " + lk.Expires.Local().Format(time.RFC3339)
			}
			_, err = fmt.Fprintf(g.stdout, "%s: %s %s locked %s\n", lk.ID, lk.Kind, printable(lockName(lk)), until)
			return err
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; the people whose sessions end read it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the lock as JSON")
	if kind != state.LockSession {
		cmd.Flags().DurationVar(&dur, "for", 0, "lift the lock after this long (default: until removed)")
	}
	if kind == state.LockIdentity {
		cmd.Flags().StringVar(&issuer, "issuer", "", "the issuer's configured name")
		cmd.Flags().StringVar(&subject, "subject", "", "the identity's subject (the token's sub claim)")
		cmd.Flags().StringVar(&username, "username", "", "the identity's username, kept for people reading the lock")
	}
	return cmd
}

// lockName is what a lock locks, for tables and messages.
func lockName(lk state.Lock) string {
	if lk.Kind == state.LockIdentity {
		s := lk.Issuer + "/" + lk.Subject
		if lk.Username != "" {
			s = lk.Username + " (" + s + ")"
		}
		return s
	}
	return lk.Name
}

func newLockLsCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [--all] [--json]",
		Short: "List the locks in force (with --all, every lock made, newest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := cf.api()
			if err != nil {
				return err
			}
			q := url.Values{}
			if all {
				q.Set("all", "1")
			}
			var ls []state.Lock
			if err := api.GetJSON(cmd.Context(), login.Query("/v1/locks", q), &ls); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(ls)
			}
			return writeLocks(g.stdout, ls, time.Now())
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&all, "all", false, "every lock made, removed and expired ones included")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// writeLocks prints locks as a table.
func writeLocks(w io.Writer, ls []state.Lock, now time.Time) error {
	if len(ls) == 0 {
		_, err := fmt.Fprintln(w, "no locks")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tLOCKED\tREASON\tBY\tSTATE")
	for _, lk := range ls {
		st := "in force"
		switch {
		case !lk.Removed.IsZero():
			st = "removed by " + lk.RemovedBy
		case !lk.Expires.IsZero() && !now.Before(lk.Expires):
			st = "expired"
		case !lk.Expires.IsZero():
			st = "for " + lk.Expires.Sub(now).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", lk.ID, lk.Kind, printable(lockName(lk)), printable(lk.Reason),
			printable(lk.CreatedBy), printable(st))
	}
	return tw.Flush()
}

func newLockRmCmd(g *globalFlags) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a lock (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := cf.api()
			if err != nil {
				return err
			}
			if err := deleteLock(cmd.Context(), api, args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%s: lock removed\n", args[0])
			return err
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

// deleteLock sends DELETE /v1/locks/{id}.
func deleteLock(ctx context.Context, api *login.APIClient, id string) error {
	req, err := api.NewRequest(ctx, http.MethodDelete, "/v1/locks/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	resp, err := api.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}
