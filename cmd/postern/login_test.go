package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/usererr"
)

func TestLoginFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     string
		want    login.Options
		wantErr string
	}{
		{name: "browser", args: []string{"--bastion", "https://b.example.com"},
			want: login.Options{Bastion: "https://b.example.com", Mode: login.ModeBrowser}},
		{name: "env bastion", env: "https://env.example.com",
			want: login.Options{Bastion: "https://env.example.com"}},
		{name: "device", args: []string{"--bastion", "https://b", "--device", "--issuer", "corp", "--no-browser"},
			want: login.Options{Bastion: "https://b", Mode: login.ModeDevice, Issuer: "corp", NoBrowser: true}},
		{name: "token file", args: []string{"--bastion", "https://b", "--token-file", "/t", "--dir", "/d", "--ttl", "15m", "-q", "--force"},
			want: login.Options{Bastion: "https://b", Mode: login.ModeTokenFile, TokenFile: "/t", Dir: "/d", TTL: 15 * time.Minute, Quiet: true, Force: true}},
		{name: "token env", args: []string{"--bastion", "https://b", "--token-env", "TOK", "--json"},
			want: login.Options{Bastion: "https://b", Mode: login.ModeTokenEnv, TokenEnv: "TOK", JSONErrors: true}},
		{name: "no bastion", wantErr: "no bastion: pass --bastion URL or set POSTERN_BASTION"},
		{name: "negative ttl", args: []string{"--bastion", "https://b", "--ttl", "-1m"}, wantErr: "--ttl must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("POSTERN_BASTION", tt.env)
			var out, errb bytes.Buffer
			g := &globalFlags{stdout: &out, stderr: &errb}
			var f loginFlags
			fs := pflag.NewFlagSet("login", pflag.ContinueOnError)
			bindLoginFlags(fs, &f)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := loginOptions(g, f)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Out != &out || got.Err != &errb {
				t.Error("output writers not passed through")
			}
			got.Out, got.Err = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestLoginCommandErrors runs the command through the CLI: errors read
// "postern login: …" on stderr, with exit status 1 and nothing else.
func TestLoginCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no bastion", []string{"login"}, "postern login: no bastion: pass --bastion URL or set POSTERN_BASTION\n"},
		{"bad url", []string{"login", "--bastion", "bastion.example.com"}, `postern login: bastion URL "bastion.example.com" must look like https://bastion.example.com` + "\n"},
		{"empty token env", []string{"login", "--bastion", "http://127.0.0.1:1", "--token-env", "POSTERN_TEST_NO_SUCH_VAR"},
			"postern login: environment variable POSTERN_TEST_NO_SUCH_VAR is empty or unset\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("POSTERN_BASTION", "")
			var out, errb bytes.Buffer
			err := newTestLoginRoot(&out, &errb, tt.args)
			ee := usererr.As(err)
			if ee == nil || ee.Exit != 1 || ee.Msg != "" {
				t.Fatalf("err = %v; want a silent exit status 1", err)
			}
			if tt.want != "" && errb.String() != tt.want {
				t.Errorf("stderr = %q; want %q", errb.String(), tt.want)
			}
			if !strings.HasPrefix(errb.String(), "postern login: ") || strings.Count(errb.String(), "\n") != 1 {
				t.Errorf("stderr = %q; want one line starting with postern login:", errb.String())
			}
			if out.Len() != 0 {
				t.Errorf("stdout = %q; want nothing", out.String())
			}
		})
	}
	// Exclusive token sources are refused by flag parsing.
	var out, errb bytes.Buffer
	if err := newTestLoginRoot(&out, &errb, []string{"login", "--bastion", "https://b", "--device", "--token-file", "f"}); err == nil ||
		!strings.Contains(err.Error(), "none of the others can be") {
		t.Errorf("--device with --token-file: err = %v; want a mutual exclusion error", err)
	}
}

// newTestLoginRoot runs the login command under a bare root command, so the
// test does not depend on which other commands the root registers.
func newTestLoginRoot(stdout, stderr *bytes.Buffer, args []string) error {
	g := &globalFlags{stdout: stdout, stderr: stderr}
	root := newLoginCmd(g)
	root.SilenceErrors, root.SilenceUsage = true, true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args[1:])
	return root.Execute()
}
