package mask

import (
	"bytes"
	"testing"
)

// bulk is terminal-like output: log lines with no secrets.
var bulk = bytes.Repeat([]byte("2026-11-27T11:44:41Z INFO request served path=/api/v1/items status=200 bytes=5123 dur=12ms\n"), 3000)

func benchScanner(b *testing.B, m *Masker) {
	sc := m.NewScanner()
	b.SetBytes(int64(len(bulk)))
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < len(bulk); i += 32 << 10 {
			sc.Next(bulk[i:min(i+32<<10, len(bulk))])
		}
	}
}

// BenchmarkScannerNoRules is the no-rules path: a nil scanner.
func BenchmarkScannerNoRules(b *testing.B) { benchScanner(b, nil) }

// BenchmarkScannerSecrets runs the secret detectors.
func BenchmarkScannerSecrets(b *testing.B) {
	var rules []Rule
	for _, d := range []string{DetectorAWSKey, DetectorAWSSecret, DetectorPrivateKey, DetectorJWT, DetectorBearer, DetectorGitHub, DetectorSlack, DetectorURLPassword} {
		rules = append(rules, Rule{Detector: d})
	}
	m, _ := New(rules)
	benchScanner(b, m)
}

// BenchmarkScannerAll runs every detector, PII included.
func BenchmarkScannerAll(b *testing.B) { benchScanner(b, allRules(b)) }
