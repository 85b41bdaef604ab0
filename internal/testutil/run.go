package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// Result is how a client program ended.
type Result struct {
	Stdout, Stderr []byte
	// Code is the exit status.
	Code int
}

// Run runs a client program (ssh, psql, scp…) for at most two minutes with
// env added to the test's environment and stdin (none if nil), and returns
// its output and exit status. A non-zero exit is a Result, not an error. It
// is safe in goroutines other than the test's.
func Run(env []string, stdin []byte, name string, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return Result{}, fmt.Errorf("%s %v timed out; stderr: %s", name, args, errb.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		return Result{}, fmt.Errorf("run %s: %w", name, err)
	}
	return Result{Stdout: out.Bytes(), Stderr: errb.Bytes(), Code: code}, nil
}
