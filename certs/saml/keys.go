package saml

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// spKeyBits is the size of a generated service provider key.
const spKeyBits = 3072

// spKeySecret names the generated service provider key and its
// certificate (two PEM blocks) among the state store's secrets.
const spKeySecret = "saml.sp"

// loadKey returns the service provider's key and certificate: from the
// configuration (inline PEM, usually ${file:…}), or generated once into the
// state store's secrets, where every replica finds the same (the metadata
// each publishes must be one, and an assertion encrypted to postern's key
// may reach any replica). The certificate is self-signed for ten years:
// SAML metadata uses a certificate only to carry the key.
func loadKey(ctx context.Context, cfg config.SAML, st *state.Store) (*rsa.PrivateKey, *x509.Certificate, error) {
	if cfg.Key != "" {
		return parseKeyPair([]byte(cfg.Key), []byte(cfg.Certificate), "identity.saml.key")
	}
	b, err := st.Secret(ctx, spKeySecret, func() ([]byte, error) {
		key, err := rsa.GenerateKey(rand.Reader, spKeyBits)
		if err != nil {
			return nil, err
		}
		cert, err := selfSigned(key)
		if err != nil {
			return nil, err
		}
		return append(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...), nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("saml key: %w", err)
	}
	keyBlock, rest := pem.Decode(b)
	certBlock, _ := pem.Decode(rest)
	if keyBlock == nil || certBlock == nil {
		return nil, nil, errors.New("saml key: the key kept in the state store is malformed")
	}
	return parseKeyPair(pem.EncodeToMemory(keyBlock), pem.EncodeToMemory(certBlock), "the SAML key kept in the state store")
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
