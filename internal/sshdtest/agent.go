package sshdtest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/posternhq/postern/internal/testutil"
)

// errReadOnly is returned for agent requests that would change the key set.
var errReadOnly = errors.New("sshdtest host key agent is read-only")

// hostKeyAgent is an SSH agent holding one signer. x/crypto's keyring needs
// the raw private key, which an ssh.Signer does not give out, so this small
// agent signs through the signer itself.
type hostKeyAgent struct{ signer ssh.Signer }

var _ agent.ExtendedAgent = hostKeyAgent{}

func (a hostKeyAgent) List() ([]*agent.Key, error) {
	pub := a.signer.PublicKey()
	return []*agent.Key{{Format: pub.Type(), Blob: pub.Marshal(), Comment: "postern test host key"}}, nil
}

func (a hostKeyAgent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return a.SignWithFlags(key, data, 0)
}

func (a hostKeyAgent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	if !bytes.Equal(key.Marshal(), a.signer.PublicKey().Marshal()) {
		return nil, errors.New("sshdtest host key agent: unknown key")
	}
	algo := ""
	switch {
	case flags&agent.SignatureFlagRsaSha256 != 0:
		algo = ssh.KeyAlgoRSASHA256
	case flags&agent.SignatureFlagRsaSha512 != 0:
		algo = ssh.KeyAlgoRSASHA512
	}
	if algo == "" {
		return a.signer.Sign(rand.Reader, data)
	}
	as, ok := a.signer.(ssh.AlgorithmSigner)
	if !ok {
		return nil, fmt.Errorf("sshdtest host key agent: signer cannot sign with %s", algo)
	}
	return as.SignWithAlgorithm(rand.Reader, data, algo)
}

func (a hostKeyAgent) Signers() ([]ssh.Signer, error) { return []ssh.Signer{a.signer}, nil }
func (hostKeyAgent) Add(agent.AddedKey) error         { return errReadOnly }
func (hostKeyAgent) Remove(ssh.PublicKey) error       { return errReadOnly }
func (hostKeyAgent) RemoveAll() error                 { return errReadOnly }
func (hostKeyAgent) Lock([]byte) error                { return errReadOnly }
func (hostKeyAgent) Unlock([]byte) error              { return errReadOnly }
func (hostKeyAgent) Extension(string, []byte) ([]byte, error) {
	return nil, agent.ErrExtensionUnsupported
}

// serveAgent serves signer on a unix socket until the test ends and returns
// the socket path. The socket lives in its own short temporary directory:
// unix socket paths are limited to about 100 bytes, and test temporary
// directories carry the test name.
func serveAgent(t testing.TB, signer ssh.Signer) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sshdtest")
	if err != nil {
		t.Fatalf("agent socket directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen for host key agent: %v", err)
	}
	testutil.Serve(t, l, func(c net.Conn) {
		_ = agent.ServeAgent(hostKeyAgent{signer}, c) // ends at EOF or cleanup
	})
	return sock
}
