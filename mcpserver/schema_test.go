package mcpserver

import (
	"context"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestToolsList: every tool registers (its schemas infer from the Go types)
// and an MCP client lists them with their input and output schemas.
func TestToolsList(t *testing.T) {
	s, err := New(Options{Caller: &StaticCaller{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ct, st := sdk.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := s.MCP().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	c := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "v0"}, nil)
	cs, err := c.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"list_targets": true, "run": true, "wait_run": true, "wait_approval": true,
		"session_output": true, "request_access": true, "list_sessions": true}
	for _, tool := range res.Tools {
		if !want[tool.Name] {
			t.Errorf("unexpected tool %s", tool.Name)
		}
		delete(want, tool.Name)
		if tool.Description == "" || tool.InputSchema == nil || tool.OutputSchema == nil {
			t.Errorf("tool %s lacks a description or a schema", tool.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing tools %v", want)
	}
	if cs.InitializeResult().Instructions == "" {
		t.Error("no instructions for the agent")
	}
}
