package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/state"
)

// Bounds of the tools' waits.
const (
	defaultRunWait  = 60 * time.Second
	maxRunWait      = 10 * time.Minute
	defaultLongPoll = 30 * time.Second
	// maxLongPoll stays under the API's own cap of a long poll (60s).
	maxLongPoll = 55 * time.Second
	// maxCommand bounds a command line.
	maxCommand = 64 << 10
)

// Options configures a Server. Caller is required.
type Options struct {
	// Caller is whom the server acts for.
	Caller Caller
	// Version is reported to MCP clients.
	Version string
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
	// SchemaCache shares the tools' JSON schemas between servers (the HTTP
	// endpoint makes one server per identity); none if nil.
	SchemaCache *sdk.SchemaCache
}

// Server is the MCP server of one caller (see the package documentation).
// It is safe for concurrent use.
type Server struct {
	opts  Options
	log   *slog.Logger
	outer *outer
	runs  runs
	mcp   *sdk.Server
}

// New returns the Server for opts.Caller with its tools.
func New(opts Options) (*Server, error) {
	if opts.Caller == nil {
		return nil, errors.New("mcp: no caller")
	}
	s := &Server{opts: opts, log: opts.Log, outer: &outer{caller: opts.Caller}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	s.mcp = sdk.NewServer(&sdk.Implementation{Name: "postern", Title: "postern bastion", Version: version},
		&sdk.ServerOptions{Instructions: instructions, SchemaCache: opts.SchemaCache, Capabilities: &sdk.ServerCapabilities{}})
	s.addTools()
	return s, nil
}

// instructions tell an agent how to use the tools.
const instructions = `postern is the bastion between you and the hosts, databases and commands you may reach.
Every command you run through it is checked against your roles, recorded, may have secrets masked in its
output, and may be held until a person approves it. Start with list_targets. run returns at once with
status pending_approval (and an approval_url to show a person) when a rule holds the command: then call
wait_approval with the approval_id until it is decided; the command's result comes with the decision.
A refused, denied or locked command says why in error and code; do not retry it unchanged.`

// MCP returns the SDK server, to be run on a transport.
func (s *Server) MCP() *sdk.Server { return s.mcp }

// Run serves the tools on t (stdio for `postern mcp`) until the client
// leaves or ctx ends, then closes the server.
func (s *Server) Run(ctx context.Context, t sdk.Transport) error {
	defer s.Close()
	return s.mcp.Run(ctx, t)
}

// Close ends the commands still running and closes the connection to the
// bastion.
func (s *Server) Close() {
	s.runs.cancelAll()
	s.outer.close()
}

// ListTargetsInput is the input of list_targets (none).
type ListTargetsInput struct{}

// RunInput is the input of run.
type RunInput struct {
	Target  string `json:"target" jsonschema:"the target's name, as list_targets shows it"`
	Command string `json:"command" jsonschema:"the command line to run (a shell runs it on ssh targets)"`
	Login   string `json:"login,omitempty" jsonschema:"the login on the target; the only one list_targets shows if omitted"`
	Stdin   string `json:"stdin,omitempty" jsonschema:"text given to the command on its standard input"`
	// WaitSeconds bounds how long run waits for the command to end.
	WaitSeconds int `json:"wait_seconds,omitempty" jsonschema:"how long to wait for the command to end (default 60, at most 600); it goes on running after, see wait_run"`
}

// WaitRunInput is the input of wait_run.
type WaitRunInput struct {
	RunID       string `json:"run_id" jsonschema:"the run_id run returned"`
	WaitSeconds int    `json:"wait_seconds,omitempty" jsonschema:"how long to wait for the command to end (default 60, at most 600; 0 answers at once)"`
}

// WaitApprovalInput is the input of wait_approval.
type WaitApprovalInput struct {
	ApprovalID  string `json:"approval_id" jsonschema:"the approval_id of a held command or of request_access"`
	WaitSeconds *int   `json:"wait_seconds,omitempty" jsonschema:"how long to wait for a decision (default 30, at most 55; 0 checks at once)"`
}

// ApprovalResult is the typed result of wait_approval and request_access.
type ApprovalResult struct {
	// ApprovalID is the request's id.
	ApprovalID string `json:"approval_id"`
	// Status is pending, approved, denied, timed_out or canceled.
	Status string `json:"status" jsonschema:"pending, approved, denied, timed_out or canceled"`
	// Kind is command (a held command) or access (just-in-time access).
	Kind string `json:"kind"`
	// Target is the target it is about.
	Target string `json:"target"`
	// URL is where a person decides it.
	URL string `json:"url,omitempty"`
	// DecidedBy names who decided it, once decided.
	DecidedBy string `json:"decided_by,omitempty"`
	// Expires is when a pending request times out.
	Expires time.Time `json:"expires"`
	// Run is the held command's result, when it was started by run in
	// this server and has ended (or is still running) after the decision.
	Run *RunResult `json:"run,omitempty"`
}

// SessionOutputInput is the input of session_output.
type SessionOutputInput struct {
	SessionID string `json:"session_id" jsonschema:"the session's id (run's session_id, or list_sessions)"`
	MaxBytes  int    `json:"max_bytes,omitempty" jsonschema:"the most output to return, from its end (default 65536)"`
}

// SessionOutput is the typed result of session_output.
type SessionOutput struct {
	// Session is the session's row of the sessions index.
	Session state.Session `json:"session"`
	// Output is what the session printed (its recording's output events),
	// the last MaxBytes of it; empty while the session runs.
	Output string `json:"output"`
	// Truncated reports that earlier output was left out.
	Truncated bool `json:"truncated,omitempty"`
	// Markers are the recording's markers: the command, approvals, the
	// exit status.
	Markers []string `json:"markers,omitempty"`
}

// RequestAccessInput is the input of request_access.
type RequestAccessInput struct {
	Target string `json:"target" jsonschema:"the target to ask access to"`
	For    string `json:"for" jsonschema:"how long, as a duration such as 30m or 2h"`
	Reason string `json:"reason" jsonschema:"why you need it; people decide on it"`
	Login  string `json:"login,omitempty" jsonschema:"the login wanted on the target"`
}

// ListSessionsInput is the input of list_sessions.
type ListSessionsInput struct {
	Status string `json:"status,omitempty" jsonschema:"running, finished, interrupted or failed; all if omitted"`
	Since  string `json:"since,omitempty" jsonschema:"how far back, as 24h or 7d, or an RFC 3339 time"`
	Limit  int    `json:"limit,omitempty" jsonschema:"at most this many, newest first (default 20)"`
}

// SessionList is the typed result of list_sessions.
type SessionList struct {
	// Sessions are the caller's sessions, newest first.
	Sessions []state.Session `json:"sessions"`
}

func (s *Server) addTools() {
	readOnly := &sdk.ToolAnnotations{ReadOnlyHint: true}
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "list_targets", Annotations: readOnly,
		Description: "Who you are at the bastion and every target you may reach: its kind, logins, ports, whether " +
			"sessions are recorded or interactive, and the command rules that hold or deny commands."}, s.listTargets)
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "run",
		Description: "Run a command on a target through the bastion (recorded, policy-checked, masked, and held " +
			"for approval when a rule says so). Returns the exit status and output; a held command returns " +
			"status pending_approval at once with approval_id and approval_url."}, s.run)
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "wait_run", Annotations: readOnly,
		Description: "Wait for a command started by run to end (or get its result at once with wait_seconds 0)."}, s.waitRun)
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "wait_approval", Annotations: readOnly,
		Description: "Wait for an approval request to be decided (wait_seconds 0 checks at once). For a command " +
			"held by run, the command's result comes with the decision."}, s.waitApproval)
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "session_output", Annotations: readOnly,
		Description: "Read one of your sessions: its metadata, its recorded output (masked as stored) and markers."}, s.sessionOutput)
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "request_access",
		Description: "Ask people for just-in-time access to a target for a while, with a reason; wait for the " +
			"decision with wait_approval."}, s.requestAccess)
	sdk.AddTool(s.mcp, &sdk.Tool{Name: "list_sessions", Annotations: readOnly,
		Description: "List your own recorded sessions, newest first."}, s.listSessions)
}

func (s *Server) listTargets(ctx context.Context, _ *sdk.CallToolRequest, _ ListTargetsInput) (*sdk.CallToolResult, bastion.Info, error) {
	out, err := s.outer.info(ctx)
	if err != nil {
		return nil, bastion.Info{}, s.userError("list your targets", err)
	}
	var inf bastion.Info
	if err := json.Unmarshal(out, &inf); err != nil {
		return nil, bastion.Info{}, s.userError("list your targets", err)
	}
	return nil, inf, nil
}

// clampWait turns wait_seconds into a duration: def if unset, within max.
func clampWait(sec int, def, max time.Duration) time.Duration {
	if sec <= 0 {
		return def
	}
	return min(time.Duration(sec)*time.Second, max)
}

func (s *Server) run(ctx context.Context, _ *sdk.CallToolRequest, in RunInput) (*sdk.CallToolResult, RunResult, error) {
	switch {
	case strings.TrimSpace(in.Target) == "":
		return nil, RunResult{}, errors.New("target is required")
	case strings.TrimSpace(in.Command) == "":
		return nil, RunResult{}, errors.New("command is required")
	case len(in.Command) > maxCommand:
		return nil, RunResult{}, errors.New("command is too long")
	case strings.ContainsAny(in.Target, " \t\r\n/@:"):
		return nil, RunResult{}, errors.New("target is a name such as web-1")
	}
	r := newRun(in.Target, in.Command)
	login := in.Login
	if login == "" {
		var err error
		if login, err = s.defaultLogin(ctx, in.Target); err != nil {
			var rf *refusal
			if !errors.As(err, &rf) {
				return nil, RunResult{}, s.userError("find your login on "+in.Target, err)
			}
			r.finish(rf) // postern refused: a typed result, as for any refusal
			return nil, r.result(s.publicURL()), nil
		}
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	if err := s.runs.add(r); err != nil {
		cancel()
		return nil, RunResult{}, err
	}
	go func() { // ends with the command; Close cancels it
		defer cancel()
		err := s.outer.execute(bg, r, in.Target, login, in.Command, []byte(in.Stdin))
		r.finish(err)
		res := r.result("")
		s.log.Info("mcp run", "run", r.id, "target", r.target, "session", res.SessionID, "status", res.Status, "code", res.Code)
	}()
	wait := clampWait(in.WaitSeconds, defaultRunWait, maxRunWait)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-r.done:
	case <-r.pending:
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, r.result(s.publicURL()), nil
}

// defaultLogin is the only login list_targets shows for target.
func (s *Server) defaultLogin(ctx context.Context, target string) (string, error) {
	out, err := s.outer.info(ctx)
	if err != nil {
		return "", err
	}
	var inf bastion.Info
	if err := json.Unmarshal(out, &inf); err != nil {
		return "", fmt.Errorf("decode the bastion's targets: %w", err)
	}
	for _, t := range inf.Targets {
		if t.Name != target {
			continue
		}
		if len(t.Logins) == 1 {
			return t.Logins[0], nil
		}
		if len(t.Logins) > 1 {
			return "", &refusal{msg: fmt.Sprintf("%s has several logins (%s): give login", target, strings.Join(t.Logins, ", ")),
				code: "login_required"}
		}
	}
	// Not reachable (or not by ssh): let the bastion refuse it, in its words.
	return inf.User, nil
}

func (s *Server) waitRun(ctx context.Context, _ *sdk.CallToolRequest, in WaitRunInput) (*sdk.CallToolResult, RunResult, error) {
	r, ok := s.runs.get(in.RunID)
	if !ok {
		return nil, RunResult{}, errors.New("no such run; results are kept 15 minutes after a command ends")
	}
	if in.WaitSeconds > 0 {
		t := time.NewTimer(clampWait(in.WaitSeconds, defaultRunWait, maxRunWait))
		defer t.Stop()
		select {
		case <-r.done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return nil, r.result(s.publicURL()), nil
}

func (s *Server) waitApproval(ctx context.Context, _ *sdk.CallToolRequest, in WaitApprovalInput) (*sdk.CallToolResult, ApprovalResult, error) {
	if in.ApprovalID == "" || strings.ContainsAny(in.ApprovalID, "/?#%") {
		return nil, ApprovalResult{}, errors.New("approval_id is required")
	}
	wait := defaultLongPoll
	if in.WaitSeconds != nil {
		wait = min(time.Duration(max(*in.WaitSeconds, 0))*time.Second, maxLongPoll)
	}
	deadline := time.Now().Add(wait)
	api, err := s.api(ctx)
	if err != nil {
		return nil, ApprovalResult{}, s.userError("read the approval request", err)
	}
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var a state.Approval
	if err := api.GetJSON(ctx, login.Query("/v1/approvals/"+url.PathEscape(in.ApprovalID), q), &a); err != nil {
		return nil, ApprovalResult{}, s.userError("read the approval request", err)
	}
	res := s.approvalResult(a)
	if r, ok := s.runs.byApproval(a.ID); ok && a.Status != state.ApprovalPending {
		// The command was released or refused: its result follows at once,
		// or within what is left of the wait.
		t := time.NewTimer(max(time.Until(deadline), 2*time.Second))
		defer t.Stop()
		select {
		case <-r.done:
		case <-t.C:
		case <-ctx.Done():
		}
		rr := r.result(s.publicURL())
		res.Run = &rr
	}
	return nil, res, nil
}

func (s *Server) approvalResult(a state.Approval) ApprovalResult {
	res := ApprovalResult{ApprovalID: a.ID, Status: a.Status, Kind: a.Kind, Target: a.Target, DecidedBy: a.DecidedBy, Expires: a.Expires}
	if u := s.publicURL(); u != "" {
		res.URL = strings.TrimRight(u, "/") + "/ui/approvals/" + a.ID
	}
	return res
}

func (s *Server) requestAccess(ctx context.Context, _ *sdk.CallToolRequest, in RequestAccessInput) (*sdk.CallToolResult, ApprovalResult, error) {
	d, err := time.ParseDuration(in.For)
	if err != nil || d <= 0 {
		return nil, ApprovalResult{}, errors.New("for must be a positive duration such as 30m or 2h")
	}
	api, err := s.api(ctx)
	if err != nil {
		return nil, ApprovalResult{}, s.userError("ask for access", err)
	}
	var a state.Approval
	if err := api.PostJSON(ctx, "/v1/approvals", map[string]string{"target": in.Target, "login": in.Login,
		"for": d.String(), "reason": in.Reason}, &a); err != nil {
		return nil, ApprovalResult{}, s.userError("ask for access", err)
	}
	return nil, s.approvalResult(a), nil
}

func (s *Server) sessionOutput(ctx context.Context, _ *sdk.CallToolRequest, in SessionOutputInput) (*sdk.CallToolResult, SessionOutput, error) {
	if in.SessionID == "" || strings.ContainsAny(in.SessionID, "/?#%.") {
		return nil, SessionOutput{}, errors.New("session_id is required")
	}
	api, err := s.api(ctx)
	if err != nil {
		return nil, SessionOutput{}, s.userError("read the session", err)
	}
	out, err := readSession(ctx, api, in.SessionID, in.MaxBytes)
	if err != nil {
		return nil, SessionOutput{}, s.userError("read the session", err)
	}
	return nil, out, nil
}

func (s *Server) listSessions(ctx context.Context, _ *sdk.CallToolRequest, in ListSessionsInput) (*sdk.CallToolResult, SessionList, error) {
	api, err := s.api(ctx)
	if err != nil {
		return nil, SessionList{}, s.userError("list your sessions", err)
	}
	cert, _, err := s.opts.Caller.Credentials(ctx)
	if err != nil {
		return nil, SessionList{}, s.userError("list your sessions", err)
	}
	limit := in.Limit
	if limit <= 0 || limit > 1000 {
		limit = 20
	}
	q := url.Values{"status": {in.Status}, "since": {in.Since}, "limit": {fmt.Sprint(limit)}}
	param, own := ownSessions(cert)
	q.Set(param, own)
	var rows []state.Session
	if err := api.GetJSON(ctx, login.Query("/v1/sessions", q), &rows); err != nil {
		return nil, SessionList{}, s.userError("list your sessions", err)
	}
	if rows == nil {
		rows = []state.Session{}
	}
	return nil, SessionList{Sessions: rows}, nil
}

// api returns an API client signing as the caller.
func (s *Server) api(ctx context.Context) (*login.APIClient, error) {
	cert, key, err := s.opts.Caller.Credentials(ctx)
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	ep := s.opts.Caller.Endpoints()
	return login.NewCertAPIClient(ep.API, cert, key, login.APIClientOptions{HTTPClient: ep.HTTPClient})
}

func (s *Server) publicURL() string {
	ep := s.opts.Caller.Endpoints()
	if ep.PublicURL != "" {
		return ep.PublicURL
	}
	return ep.API
}

// userError keeps what an agent may read of err: the bastion's own answer
// (an API error, postern's refusal) as it is; anything else is logged and
// answered with a short failure, so that no internal detail (addresses,
// paths) reaches a remote caller.
func (s *Server) userError(what string, err error) error {
	var se *login.ServerError
	var rf *refusal
	if errors.As(err, &se) || errors.As(err, &rf) {
		return err
	}
	s.log.Warn("mcp tool failed", "tool", what, "err", err)
	return errors.New("postern could not " + what + "; try again")
}
