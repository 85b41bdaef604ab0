package pgproxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// scramClient is the client side of SCRAM-SHA-256 (RFC 5802, RFC 7677)
// without channel binding.
type scramClient struct {
	password    string
	nonce       string
	firstBare   string
	serverFirst string
	authMessage string
	saltedPass  []byte
}

func newSCRAM(password string) (*scramClient, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("scram nonce: %w", err)
	}
	c := &scramClient{password: password, nonce: base64.RawStdEncoding.EncodeToString(b)}
	// PostgreSQL ignores the SCRAM user name (it uses the startup user).
	c.firstBare = "n=,r=" + c.nonce
	return c, nil
}

// first returns the client-first-message.
func (c *scramClient) first() []byte { return []byte("n,," + c.firstBare) }

// final takes the server-first-message and returns the client-final-message.
func (c *scramClient) final(serverFirst []byte) ([]byte, error) {
	c.serverFirst = string(serverFirst)
	var nonce, salt string
	iter := 0
	for _, kv := range strings.Split(c.serverFirst, ",") {
		if len(kv) < 2 || kv[1] != '=' {
			continue
		}
		switch kv[0] {
		case 'r':
			nonce = kv[2:]
		case 's':
			salt = kv[2:]
		case 'i':
			iter, _ = strconv.Atoi(kv[2:])
		}
	}
	if !strings.HasPrefix(nonce, c.nonce) || salt == "" || iter < 1 || iter > 1<<20 {
		return nil, errors.New("scram: bad server-first-message")
	}
	saltB, err := base64.StdEncoding.DecodeString(salt)
	if err != nil {
		return nil, errors.New("scram: bad salt")
	}
	c.saltedPass, err = pbkdf2.Key(sha256.New, c.password, saltB, iter, 32)
	if err != nil {
		return nil, fmt.Errorf("scram: %w", err)
	}
	withoutProof := "c=biws,r=" + nonce
	c.authMessage = c.firstBare + "," + c.serverFirst + "," + withoutProof
	clientKey := hmacSum(c.saltedPass, "Client Key")
	stored := sha256.Sum256(clientKey)
	sig := hmacSum(stored[:], c.authMessage)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ sig[i]
	}
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// verify checks the server-final-message.
func (c *scramClient) verify(serverFinal []byte) error {
	v, ok := bytes.CutPrefix(serverFinal, []byte("v="))
	if !ok {
		return errors.New("scram: server rejected the proof")
	}
	want := hmacSum(hmacSum(c.saltedPass, "Server Key"), c.authMessage)
	got, err := base64.StdEncoding.DecodeString(string(v))
	if err != nil || !hmac.Equal(got, want) {
		return errors.New("scram: bad server signature")
	}
	return nil
}

func hmacSum(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// md5Password is PostgreSQL's md5 password response.
func md5Password(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	h := md5.New()
	h.Write([]byte(hex.EncodeToString(inner[:])))
	h.Write(salt[:])
	return "md5" + hex.EncodeToString(h.Sum(nil))
}
