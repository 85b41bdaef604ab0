package innerhop

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/guardrails"
	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

const testAWSKey = "AKIAIOSFODNN7EXAMPLE"

// setMasking installs masking rules on the fixture's role before any
// session. Stream masking holds partial lines for 2 seconds, long enough
// that a test's split is never flushed by the timer.
func (f *hopFixture) setMasking(rules ...config.MaskRule) {
	f.t.Helper()
	cfg := *f.cfg
	cfg.Masking = config.Masking{Rules: rules}
	mp, err := guardrails.NewPolicy(&cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.hop.opts.Masking = mp
	f.hop.opts.StreamFlushDelay = 2 * time.Second
}

type sinkRec struct {
	mu      sync.Mutex
	out     bytes.Buffer
	in      bytes.Buffer
	markers []string
	masked  bool
}

func (s *sinkRec) Output(p []byte) error { s.mu.Lock(); s.out.Write(p); s.mu.Unlock(); return nil }
func (s *sinkRec) Input(p []byte) error  { s.mu.Lock(); s.in.Write(p); s.mu.Unlock(); return nil }
func (s *sinkRec) Resize(int, int) error { return nil }
func (s *sinkRec) Marker(l string) error {
	s.mu.Lock()
	s.markers = append(s.markers, l+"@"+s.out.String())
	s.mu.Unlock()
	return nil
}
func (s *sinkRec) Err() error { return nil }
func (s *sinkRec) SetMasked() { s.mu.Lock(); s.masked = true; s.mu.Unlock() }

func TestHopTapMasksSplitOutput(t *testing.T) {
	m, _ := mask.New([]mask.Rule{{Detector: mask.DetectorAWSKey}})
	sink := &sinkRec{}
	tap := newHopTap(sink, true, nil)
	tap.setMask(m)
	_ = tap.output([]byte("$ echo key\r\nkey AKIAIOSF"))
	_ = tap.output([]byte("ODNN7EXAMPLE\r\n$ "))
	_ = tap.input([]byte("x")) // flushes the prompt before the input
	_ = tap.marker("exit 0")
	if err := tap.close(); err != nil {
		t.Fatal(err)
	}
	if got := sink.out.String(); got != "$ echo key\r\nkey [MASKED:aws_key]\r\n$ " {
		t.Fatalf("recorded %q", got)
	}
	if !sink.masked || len(sink.markers) != 2 || !strings.HasPrefix(sink.markers[0], "masking applied@$ echo key\r\n") {
		t.Fatalf("masked %v markers %q", sink.masked, sink.markers)
	}
	if strings.Contains(strings.Join(sink.markers, ""), "ODNN") {
		t.Fatal("a marker holds the value")
	}
}

// TestInnerHopMaskingExec runs a command whose output holds an AWS key
// written in two writes: with a recording+stream rule it is masked on the
// client and in the recording; with a recording rule only in the recording.
func TestInnerHopMaskingExec(t *testing.T) {
	cmd := `printf 'key AKIAIOSF'; sleep 0.2; printf 'ODNN7EXAMPLE done\n'`
	for _, tc := range []struct {
		name       string
		appliesTo  []string
		wantClient string
	}{
		{"both", nil, "key [MASKED:aws_key] done\n"},
		{"recording only", []string{"recording"}, "key " + testAWSKey + " done\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHopFixture(t, fixtureOpts{record: "required"})
			f.setTargets(config.Target{Name: "box", Kind: config.KindCommand, Command: []string{"/bin/sh", "-c"}})
			f.setMasking(config.MaskRule{Detector: "aws_key", AppliesTo: tc.appliesTo})
			r := f.ssh(nil, "box", cmd)
			if string(r.Stdout) != tc.wantClient {
				t.Errorf("client got %q; want %q", r.Stdout, tc.wantClient)
			}
			f.waitEvent(state.EventSessionEnd, 1)
			c := f.checkCast(f.lastSession())
			if string(c.output) != "key [MASKED:aws_key] done\n" {
				t.Errorf("recorded %q", c.output)
			}
			if c.meta["masked"] != true {
				t.Errorf("metadata masked = %v", c.meta["masked"])
			}
			var marker bool
			for _, e := range c.codes("m") {
				marker = marker || e.Data == "masking applied"
			}
			if !marker {
				t.Error("no masking applied marker")
			}
		})
	}
}

// TestInnerHopMaskingShell types a command in an interactive shell whose
// output is an AWS key in two writes.
func TestInnerHopMaskingShell(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	f.setTargets(config.DemoTarget())
	f.setMasking(config.MaskRule{Detector: "aws_key"})
	c := startPTYClient(t, 100, 30, "-F", f.sshCfg, "-tt", "demo")
	c.Send("printf 'AKIAIOSF'; sleep 0.2; printf 'ODNN7EXAMPLE\\n'; echo END-$((40+2))\r")
	c.Expect(`END-42`)
	c.Send("exit 0\r")
	_, out := c.Wait()
	if strings.Contains(out, testAWSKey) || !strings.Contains(out, "[MASKED:aws_key]") {
		t.Errorf("client output %q", out)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	cast := f.checkCast(f.lastSession())
	if strings.Contains(string(cast.output), testAWSKey) || !strings.Contains(string(cast.output), "[MASKED:aws_key]") {
		t.Errorf("recorded output %q", cast.output)
	}
}

type discardSink struct{}

func (discardSink) Output([]byte) error   { return nil }
func (discardSink) Input([]byte) error    { return nil }
func (discardSink) Resize(int, int) error { return nil }
func (discardSink) Marker(string) error   { return nil }
func (discardSink) Err() error            { return nil }

// BenchmarkHopTapMasking measures the recording tap on bulk output (32 KiB
// chunks of log lines) without rules and with the secret detectors.
func BenchmarkHopTapMasking(b *testing.B) {
	chunk := bytes.Repeat([]byte("2026-11-27T11:44:41Z INFO request served path=/api/v1/items status=200 bytes=5123\n"), 400)[:32<<10]
	var secrets []mask.Rule
	for _, d := range []string{mask.DetectorAWSKey, mask.DetectorAWSSecret, mask.DetectorPrivateKey, mask.DetectorJWT,
		mask.DetectorBearer, mask.DetectorGitHub, mask.DetectorSlack, mask.DetectorURLPassword} {
		secrets = append(secrets, mask.Rule{Detector: d})
	}
	m, _ := mask.New(secrets)
	for _, c := range []struct {
		name string
		m    *mask.Masker
	}{{"none", nil}, {"secrets", m}} {
		b.Run(c.name, func(b *testing.B) {
			tap := newHopTap(discardSink{}, true, nil)
			tap.setMask(c.m)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				_ = tap.output(chunk)
			}
			_ = tap.close()
		})
	}
}
