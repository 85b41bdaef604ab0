package saml

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/internal/config"
)

// spKeyBits is the size of a generated service provider key.
const spKeyBits = 3072

// loadKey returns the service provider's key and certificate: from the
// configuration (inline PEM, usually ${file:…}) or from <dataDir>/saml/sp.key
// and sp.crt. A missing key is generated (directory 0700, files 0600); a
// missing certificate, or one that is not for the key, is made anew
// (self-signed, ten years: SAML metadata uses a certificate only to carry
// the key). A key file readable by group or others is refused.
func loadKey(cfg config.SAML, dataDir string) (*rsa.PrivateKey, *x509.Certificate, error) {
	if cfg.Key != "" {
		return parseKeyPair([]byte(cfg.Key), []byte(cfg.Certificate), "identity.saml.key")
	}
	dir := filepath.Join(dataDir, "saml")
	keyPath, certPath := filepath.Join(dir, "sp.key"), filepath.Join(dir, "sp.crt")
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if keyPEM, err = generateKey(dir, keyPath); err != nil {
			return nil, nil, err
		}
	} else if err != nil {
		return nil, nil, fmt.Errorf("saml key: %w", err)
	}
	if st, err := os.Stat(keyPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("saml key %s is readable by group or others (mode %v); chmod 600 it", keyPath, st.Mode().Perm())
	}
	key, err := parseKey(keyPEM, keyPath)
	if err != nil {
		return nil, nil, err
	}
	if certPEM, err := os.ReadFile(certPath); err == nil {
		if _, cert, err := parseKeyPair(keyPEM, certPEM, keyPath); err == nil {
			return key, cert, nil
		}
	}
	cert, err := selfSigned(key)
	if err != nil {
		return nil, nil, err
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		return nil, nil, fmt.Errorf("write saml certificate: %w", err)
	}
	return key, cert, nil
}

// parseKey parses a PEM RSA private key (PKCS#1 or PKCS#8) of at least
// 2048 bits.
func parseKey(keyPEM []byte, source string) (*rsa.PrivateKey, error) {
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("%s: not a PEM private key", source)
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k8, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		rk, ok := k8.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: the key must be RSA (XML encryption needs it)", source)
		}
		key = rk
	} else {
		return nil, fmt.Errorf("%s: not an RSA private key", source)
	}
	if key.N.BitLen() < 2048 {
		return nil, fmt.Errorf("%s: the RSA key has %d bits; use at least 2048", source, key.N.BitLen())
	}
	return key, nil
}

// parseKeyPair parses a PEM RSA private key and the PEM certificate of its
// public key.
func parseKeyPair(keyPEM, certPEM []byte, source string) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := parseKey(keyPEM, source)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: the certificate is not PEM", source)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: the certificate: %w", source, err)
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("%s: the certificate is not for this key", source)
	}
	return key, cert, nil
}

// generateKey writes a new RSA key to keyPath once (another process that
// wrote one first wins) and returns the key file's contents.
func generateKey(dir, keyPath string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("saml key directory: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, spKeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate saml key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := atomicfile.Create(keyPath, keyPEM, 0o600); errors.Is(err, fs.ErrExist) {
		return os.ReadFile(keyPath)
	} else if err != nil {
		return nil, fmt.Errorf("write saml key: %w", err)
	}
	return keyPEM, nil
}

// selfSigned returns a self-signed certificate of key valid for ten years.
func selfSigned(key *rsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("generate saml certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "postern SAML service provider"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("generate saml certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}
