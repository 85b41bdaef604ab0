package mask

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzMaskScanner checks that splitting a stream anywhere gives the same
// output as scanning it whole, that nothing is lost without matches, and
// that valid UTF-8 stays valid.
func FuzzMaskScanner(f *testing.F) {
	f.Add([]byte("AKIAIOSFODNN7EXAMPLE\n"), 5)
	f.Add([]byte("x -----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY----- y"), 12)
	f.Add([]byte("\x1b[31m4111 1111 1111 1111\x1b[0m é"), 3)
	f.Add([]byte("https://u:p@h bearer abcdefghijklmnopqrstuvw"), 20)
	m := allRules(f)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		if len(in) > 1<<14 {
			return
		}
		whole := m.NewScanner()
		a, _ := whole.Next(in)
		want := append([]byte(nil), a...)
		b, _ := whole.Flush()
		want = append(want, b...)

		if split < 0 {
			split = -split
		}
		if len(in) > 0 {
			split %= len(in) + 1
		} else {
			split = 0
		}
		sc := m.NewScanner()
		o1, _ := sc.Next(in[:split])
		got := append([]byte(nil), o1...)
		o2, _ := sc.Next(in[split:])
		got = append(got, o2...)
		o3, _ := sc.Flush()
		got = append(got, o3...)
		if !bytes.Equal(got, want) && whole.Masked() == sc.Masked() {
			// Splitting may only change the result when the number of
			// matches differs (a match cut by the carry bound).
			t.Fatalf("split %d: %q vs whole %q", split, got, want)
		}
		if whole.Masked() == 0 && !bytes.Equal(want, in) {
			t.Fatalf("no match but output changed: %q -> %q", in, want)
		}
		if utf8.Valid(in) && !utf8.Valid(want) {
			t.Fatalf("broke UTF-8: %q -> %q", in, want)
		}
	})
}
