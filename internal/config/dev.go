package config

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
)

// DevIssuerPath is where `postern serve --dev` mounts its embedded development
// OIDC issuer on the HTTP listener.
const DevIssuerPath = "/dev/oidc"

// DevClientID is the OAuth client id of the development issuer.
const DevClientID = "postern"

// Dev returns the embedded development configuration: loopback listeners, a
// data dir under dataDir, the development issuer, a built-in `demo` command
// target (a shell in a throwaway directory) and one role that may reach it
// with every API permission. Defaults are applied and the result validated.
func Dev(dataDir string) (*Config, error) {
	if dataDir == "" {
		dataDir = ".postern"
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	c := &Config{
		Dev:     true,
		Listen:  Listen{SSH: "127.0.0.1:2222", HTTP: "127.0.0.1:8080"},
		DataDir: abs,
	}
	c.PublicURL = "http://" + c.Listen.HTTP
	c.Identity.Issuers = []Issuer{{
		Name:          "dev",
		IssuerURL:     c.PublicURL + DevIssuerPath,
		ClientID:      DevClientID,
		Kind:          "human",
		UsernameClaim: "preferred_username",
		GroupsClaim:   "groups",
	}}
	c.Targets = []Target{DemoTarget()}
	c.Roles = []Role{{
		Name:        "dev",
		Match:       RoleMatch{Issuers: []string{"dev"}},
		Targets:     []TargetSelector{{Name: "*"}},
		Logins:      []string{"dev"},
		Record:      "required",
		Forwarding:  Forwarding{Local: true},
		Permissions: []string{"auditor", "approver", "admin"},
		// One obvious command of each kind, for the README tour: `rm` waits
		// for the development issuer's reviewer (postern login --as
		// reviewer) to approve it; shutdown, reboot and mkfs are refused.
		Rules: []Rule{
			{Match: `^\s*(sudo|rm)\b`, Action: "approve", Approvers: []string{"reviewers"}},
			{Match: `\b(shutdown|reboot|mkfs)\b`, Action: "deny"},
		},
	}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// DemoTarget is the development mode's built-in command target: an
// interactive bash without profile files, in a throwaway directory, with
// OpenSSH's sftp-server as its sftp subsystem (so that sftp and scp work)
// when it is installed.
func DemoTarget() Target {
	t := Target{
		Name:    "demo",
		Kind:    KindCommand,
		Command: []string{"/bin/bash", "--noprofile", "--norc", "-i"},
		Exec:    []string{"/bin/bash", "--noprofile", "--norc", "-c"},
		Env:     map[string]string{"PS1": `demo:\w\$ `},
		Labels:  map[string]string{"env": "dev"},
	}
	if p := SFTPServer(); p != "" {
		t.Subsystems = map[string][]string{"sftp": {p}}
	}
	return t
}

// sftpServerPaths are where distributions install OpenSSH's sftp-server.
var sftpServerPaths = []string{
	"/usr/lib/openssh/sftp-server",     // Debian, Ubuntu
	"/usr/libexec/openssh/sftp-server", // Fedora, RHEL
	"/usr/lib/ssh/sftp-server",         // Arch, Alpine
	"/usr/libexec/sftp-server",         // BSDs, macOS
}

// SFTPServer returns the path of OpenSSH's sftp-server on this machine, or
// "" if none is installed.
func SFTPServer() string {
	for _, p := range sftpServerPaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// ReloadDev re-applies the listener-derived fields after a caller changed the
// listen addresses of a Dev configuration (tests use port 0 listeners).
func (c *Config) ReloadDev(httpAddr, sshAddr string) {
	c.Listen.HTTP, c.Listen.SSH = httpAddr, sshAddr
	c.PublicURL = "http://" + httpAddr
	c.SSHAddress = loopbackIfUnspecified(sshAddr)
	for i := range c.Identity.Issuers {
		if c.Identity.Issuers[i].Name == "dev" {
			c.Identity.Issuers[i].IssuerURL = c.PublicURL + DevIssuerPath
		}
	}
}

// FillPorts puts the ports the listeners really got (httpAddr, sshAddr:
// host:port) into PublicURL and SSHAddress where those were derived from a
// listener on port 0 (and so say port 0).
func (c *Config) FillPorts(httpAddr, sshAddr string) {
	if h, p, err := net.SplitHostPort(c.SSHAddress); err == nil && p == "0" {
		if _, real, err := net.SplitHostPort(sshAddr); err == nil {
			c.SSHAddress = net.JoinHostPort(h, real)
		}
	}
	if u, err := url.Parse(c.PublicURL); err == nil && u.Port() == "0" {
		if _, real, err := net.SplitHostPort(httpAddr); err == nil {
			u.Host = net.JoinHostPort(u.Hostname(), real)
			c.PublicURL = u.String()
		}
	}
}
