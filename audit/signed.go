package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

// Signer signs audit records: the audit signing key (certs.AuditKey).
type Signer interface {
	// Sign returns the raw 64-byte Ed25519 signature of msg.
	Sign(msg []byte) ([]byte, error)
	// KeyID returns the SHA256 fingerprint of the signing key ("SHA256:…").
	KeyID() string
}

// signContext prefixes every signed message, so that a signature over an
// audit record can never be mistaken for a signature over anything else.
const signContext = "postern-audit-v1\x00"

// Envelope is a signed audit record. Record holds the exact JSON text that
// was signed, kept as a string so that re-encoding the envelope (pretty
// printing, a log pipeline) never changes the signed bytes. Sig is the
// standard base64 of the Ed25519 signature of "postern-audit-v1", a zero
// byte, and Record; Key names the signing key by its SHA256 fingerprint.
type Envelope struct {
	// Record is the signed JSON text (a Checkpoint or a SealRecord).
	Record string `json:"record"`
	// Key is the SHA256 fingerprint of the signing key.
	Key string `json:"key"`
	// Sig is the base64 Ed25519 signature.
	Sig string `json:"sig"`
}

// Sign encodes record as JSON and signs it.
func Sign(s Signer, record any) (Envelope, error) {
	b, err := json.Marshal(record)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode audit record: %w", err)
	}
	sig, err := s.Sign(signedMessage(b))
	if err != nil {
		return Envelope{}, err
	}
	return Envelope{Record: string(b), Key: s.KeyID(), Sig: base64.StdEncoding.EncodeToString(sig)}, nil
}

func signedMessage(record []byte) []byte {
	return append([]byte(signContext), record...)
}

// Errors of Keyring.Verify.
var (
	// ErrUnknownKey reports an envelope signed by a key the keyring does not
	// hold.
	ErrUnknownKey = errors.New("signed by a key that is not trusted")
	// ErrBadSignature reports a signature that does not verify.
	ErrBadSignature = errors.New("signature does not verify")
)

// Keyring is the set of audit public keys a verifier trusts, by
// fingerprint. The zero value trusts nothing.
type Keyring struct {
	keys map[string]ed25519.PublicKey
}

// NewKeyring trusts keys; keys that are not ed25519 are an error.
func NewKeyring(keys []ssh.PublicKey) (*Keyring, error) {
	k := &Keyring{keys: map[string]ed25519.PublicKey{}}
	for _, pub := range keys {
		cpk, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return nil, fmt.Errorf("audit key %s: not a plain public key", ssh.FingerprintSHA256(pub))
		}
		ed, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("audit key %s is %s; audit keys are ed25519", ssh.FingerprintSHA256(pub), pub.Type())
		}
		k.keys[ssh.FingerprintSHA256(pub)] = ed
	}
	return k, nil
}

// ParseKeyring reads authorized_keys lines ("ssh-ed25519 AAAA… comment"),
// as `postern ca export --audit` prints them; blank lines and # comments are
// skipped.
func ParseKeyring(b []byte) (*Keyring, error) {
	var keys []ssh.PublicKey
	for len(bytes.TrimSpace(b)) > 0 {
		pub, _, _, rest, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			return nil, fmt.Errorf("not an authorized_keys line: %w", err)
		}
		keys = append(keys, pub)
		b = rest
	}
	if len(keys) == 0 {
		return nil, errors.New("no public key")
	}
	return NewKeyring(keys)
}

// ReadKeyring reads ParseKeyring's format from a file.
func ReadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Len returns the number of trusted keys.
func (k *Keyring) Len() int { return len(k.keys) }

// Verify checks e's signature.
func (k *Keyring) Verify(e Envelope) error {
	pub, ok := k.keys[e.Key]
	if !ok {
		return fmt.Errorf("%w (%s)", ErrUnknownKey, e.Key)
	}
	sig, err := base64.StdEncoding.DecodeString(e.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	if !ed25519.Verify(pub, signedMessage([]byte(e.Record)), sig) {
		return ErrBadSignature
	}
	return nil
}

// Open verifies e and decodes its record into v.
func (k *Keyring) Open(e Envelope, v any) error {
	if err := k.Verify(e); err != nil {
		return err
	}
	return decodeRecord(e, v)
}

// decodeRecord decodes e's record into v without checking the signature.
func decodeRecord(e Envelope, v any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(e.Record)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("signed record is not valid: %w", err)
	}
	return nil
}
