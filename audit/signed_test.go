package audit_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

func noCA() config.CA { return config.CA{} }

func auditKey(t testing.TB, cfg config.CA) *certs.AuditKey {
	t.Helper()
	k, err := certs.LoadAuditKey(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSignedRecords: a signed record verifies with the key that signed
// it, or with a keyring that still trusts it after a rotation; an altered
// record, signature or key id, or an unknown key, does not. The signature
// is plain Ed25519 over the context string and the record, as documented.
func TestSignedRecords(t *testing.T) {
	old := auditKey(t, config.CA{})
	cur := auditKey(t, config.CA{Trusted: old.AuthorizedKeys()})
	cp := audit.Checkpoint{Record: audit.RecordCheckpoint, Seq: 42, Hash: strings.Repeat("a", 64), Time: time.Unix(1700000000, 0).UTC(), Sealed: 3}
	env, err := audit.Sign(old, cp)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := audit.NewKeyring(cur.Trusted())
	if err != nil {
		t.Fatal(err)
	}
	var got audit.Checkpoint
	if err := ring.Open(env, &got); err != nil || got != cp {
		t.Fatalf("open a record signed by the rotated-out key: %+v, %v", got, err)
	}
	// What the documentation promises a third party.
	pub := old.Trusted()[0].(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey)
	sig, _ := base64.StdEncoding.DecodeString(env.Sig)
	if !ed25519.Verify(pub, []byte("postern-audit-v1\x00"+env.Record), sig) {
		t.Error("the signature is not Ed25519 over \"postern-audit-v1\\0\" + record")
	}
	onlyCur, _ := audit.NewKeyring(cur.Trusted()[:1])
	bad := func(e audit.Envelope) audit.Envelope { return e }
	tests := []struct {
		name string
		ring *audit.Keyring
		env  audit.Envelope
		want error
	}{
		{"key no longer trusted", onlyCur, env, audit.ErrUnknownKey},
		{"record altered", ring, func() audit.Envelope {
			e := bad(env)
			e.Record = strings.Replace(e.Record, `"seq":42`, `"seq":43`, 1)
			return e
		}(), audit.ErrBadSignature},
		{"signature altered", ring, func() audit.Envelope {
			e := bad(env)
			e.Sig = base64.StdEncoding.EncodeToString(make([]byte, 64))
			return e
		}(), audit.ErrBadSignature},
		{"signature garbage", ring, func() audit.Envelope { e := bad(env); e.Sig = "%%%"; return e }(), audit.ErrBadSignature},
		{"key id swapped", ring, func() audit.Envelope { e := bad(env); e.Key = cur.KeyID(); return e }(), audit.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.ring.Verify(tt.env); !errors.Is(err, tt.want) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
}

// TestParseKeyring reads what `postern ca export --audit` prints and
// refuses anything else.
func TestParseKeyring(t *testing.T) {
	k := auditKey(t, config.CA{})
	ring, err := audit.ParseKeyring([]byte("# audit keys\n\n" + strings.Join(k.AuthorizedKeys(), "\n") + "\n"))
	if err != nil || ring.Len() != 1 {
		t.Fatalf("ParseKeyring: %v, %v", ring, err)
	}
	for _, in := range []string{"", "not a key", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"} {
		if _, err := audit.ParseKeyring([]byte(in)); err == nil {
			t.Errorf("ParseKeyring(%q) succeeded", in)
		}
	}
}
