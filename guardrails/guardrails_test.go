package guardrails

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/internal/config"
)

const testAWSKey = "AKIAIOSFODNN7EXAMPLE"

func TestStreamWriterSplitAndTimer(t *testing.T) {
	m, _ := mask.New([]mask.Rule{{Detector: mask.DetectorAWSKey}})
	var mu sync.Mutex
	var buf bytes.Buffer
	w := NewStreamWriter(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }), m, 0)
	_, _ = w.Write([]byte("a AKIAIOSF"))
	_, _ = w.Write([]byte("ODNN7EXAMPLE b\n$ "))
	// The prompt reaches the client after the flush delay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := buf.String()
		mu.Unlock()
		if got == "a [MASKED:aws_key] b\n$ " {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client got %q", got)
		}
		time.Sleep(time.Millisecond)
	}
	_, _ = w.Write([]byte("tail"))
	w.Flush()
	if !strings.HasSuffix(buf.String(), "$ tail") {
		t.Fatalf("flush: %q", buf.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestPolicyRoles(t *testing.T) {
	cfg := &config.Config{
		Masking: config.Masking{Rules: []config.MaskRule{{Detector: "email", AppliesTo: []string{"recording"}}}},
		Roles:   []config.Role{{Name: "a", Masking: config.Masking{Rules: []config.MaskRule{{Detector: "aws_key", AppliesTo: []string{"stream"}}}}}, {Name: "b"}},
	}
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ma := p.For("b,a")
	if out, _ := ma.Stream.Mask([]byte(testAWSKey + " x@example.com")); string(out) != "[MASKED:aws_key] x@example.com" {
		t.Errorf("stream %q", out)
	}
	if out, _ := ma.Recording.Mask([]byte(testAWSKey + " x@example.com")); string(out) != testAWSKey+" [MASKED:email]" {
		t.Errorf("recording %q", out)
	}
	if mb := p.For("b"); mb.Stream != nil {
		t.Error("role b has no stream rules")
	}
	if none, _ := NewPolicy(&config.Config{}); none.For("x").Recording != nil || none.For("x").Stream != nil {
		t.Error("no rules must mask nothing")
	}
	if err := p.Update(&config.Config{Roles: []config.Role{{Name: "a", Masking: config.Masking{Rules: []config.MaskRule{{Detector: "jwt"}}}}}}); err != nil {
		t.Fatal(err)
	}
	if m := p.For("b,a"); m.Recording == nil || m.Stream == nil {
		t.Error("update not applied")
	}
	if err := p.Update(&config.Config{Masking: config.Masking{Rules: []config.MaskRule{{Pattern: "("}}}}); err == nil {
		t.Error("a bad rule was accepted")
	}
}
