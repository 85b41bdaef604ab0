package mask

import (
	"bytes"
	"regexp"
	"sort"
	"strings"
)

// detector is a built-in pattern.
type detector struct {
	re *regexp.Regexp
	// valid, if set, checks a candidate match (a checksum).
	valid func([]byte) bool
	// pre, if set, is a cheap test on a whole segment; false means no match
	// can be in it.
	pre func([]byte) bool
	// runs, if set, limits the pattern to runs of these bytes holding at
	// least runDigits digits: the regular expression runs only on them.
	runs      *[256]bool
	runDigits int
}

// byteSet returns the set of the bytes in s plus the ranges in ranges
// (pairs of inclusive bounds).
func byteSet(s string, ranges ...byte) *[256]bool {
	var set [256]bool
	for i := 0; i < len(s); i++ {
		set[s[i]] = true
	}
	for i := 0; i+1 < len(ranges); i += 2 {
		for c := int(ranges[i]); c <= int(ranges[i+1]); c++ {
			set[c] = true
		}
	}
	return &set
}

// forRuns calls fn for every maximal run of bytes in set holding at least
// minDigits digits, widened by one byte on each side so that word
// boundaries see their context.
func forRuns(p []byte, set *[256]bool, minDigits int, fn func(s, e int)) {
	for i := 0; i < len(p); {
		if !set[p[i]] {
			i++
			continue
		}
		s, d := i, 0
		for i < len(p) && set[p[i]] {
			if p[i] >= '0' && p[i] <= '9' {
				d++
			}
			i++
		}
		if d >= minDigits {
			fn(max(s-1, 0), min(i+1, len(p)))
		}
	}
}

// The value group of a pattern: when a pattern has a group named v, only
// that group is replaced (the password in a URL, not the URL).
const valueGroup = "v"

// Built-in detector names.
const (
	DetectorAWSKey      = "aws_key"
	DetectorAWSSecret   = "aws_secret"
	DetectorPrivateKey  = "private_key"
	DetectorJWT         = "jwt"
	DetectorBearer      = "bearer"
	DetectorGitHub      = "github_token"
	DetectorSlack       = "slack_token"
	DetectorURLPassword = "url_password"
	DetectorEmail       = "email"
	DetectorCard        = "credit_card"
	DetectorIBAN        = "iban"
	DetectorPhone       = "phone"
)

func contains(subs ...string) func([]byte) bool {
	bs := make([][]byte, len(subs))
	for i, s := range subs {
		bs[i] = []byte(s)
	}
	return func(p []byte) bool {
		for _, b := range bs {
			if bytes.Contains(p, b) {
				return true
			}
		}
		return false
	}
}

// containsFold is a prefilter for a case-insensitive word: it looks for the
// word without its first letter in lower or upper case (which covers lower,
// upper and title case; other mixed spellings are not masked).
func containsFold(word string) func([]byte) bool {
	rest := word[1:]
	return contains(strings.ToLower(rest), strings.ToUpper(rest))
}

// detectors are the built-in detectors. Character classes exclude control
// bytes so that a match never reaches into an escape sequence.
var detectors = map[string]detector{
	DetectorAWSKey: {
		re:  regexp.MustCompile(`\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b`),
		pre: contains("AKIA", "ASIA", "ABIA", "ACCA"),
	},
	DetectorAWSSecret: {
		re:  regexp.MustCompile(`(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?(?P<v>[A-Za-z0-9/+=]{40})\b`),
		pre: containsFold("secret"),
	},
	DetectorJWT: {
		re:  regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}`),
		pre: contains("eyJ"),
	},
	DetectorBearer: {
		re:  regexp.MustCompile(`(?i)\bbearer\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)`),
		pre: containsFold("bearer"),
	},
	DetectorGitHub: {
		re:  regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})`),
		pre: contains("gh", "github_pat_"),
	},
	DetectorSlack: {
		re:  regexp.MustCompile(`\bxox[bpars]-[A-Za-z0-9-]{10,}`),
		pre: contains("xox"),
	},
	DetectorURLPassword: {
		re:  regexp.MustCompile(`\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\x00-\x1f\x7f]+:(?P<v>[^\s/@\x00-\x1f\x7f]+)@`),
		pre: contains("://"),
	},
	DetectorEmail: {
		re:  regexp.MustCompile(`\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b`),
		pre: contains("@"),
	},
	DetectorCard: {
		re:        regexp.MustCompile(`\b\d(?:[ -]?\d){12,18}\b`),
		valid:     luhn,
		runs:      byteSet(" -", '0', '9'),
		runDigits: 13,
	},
	DetectorIBAN: {
		re:        regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`),
		valid:     ibanValid,
		runs:      byteSet(" ", '0', '9', 'A', 'Z'),
		runDigits: 2,
	},
	DetectorPhone: {
		re:        regexp.MustCompile(`(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\b\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}\b`),
		runs:      byteSet(" .()+-", '0', '9'),
		runDigits: 8,
	},
}

// pemBegin and pemEnd delimit private key blocks (DetectorPrivateKey).
var (
	pemBegin = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----`)
	pemEnd   = regexp.MustCompile(`-----END [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----`)
)

// Detectors returns the names of the built-in detectors, sorted.
func Detectors() []string {
	names := []string{DetectorPrivateKey}
	for n := range detectors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// KnownDetector reports whether name is a built-in detector.
func KnownDetector(name string) bool {
	_, ok := detectors[name]
	return ok || name == DetectorPrivateKey
}

// luhn reports whether the digits in p (separators skipped) pass the Luhn
// check and number 13 to 19.
func luhn(p []byte) bool {
	sum, n := 0, 0
	for i := len(p) - 1; i >= 0; i-- {
		c := p[i]
		if c < '0' || c > '9' {
			continue
		}
		d := int(c - '0')
		if n%2 == 1 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		n++
	}
	return n >= 13 && n <= 19 && sum%10 == 0
}

// ibanValid reports whether p (spaces skipped) is an IBAN with a valid
// mod-97 check.
func ibanValid(p []byte) bool {
	var s []byte
	for _, c := range p {
		if c != ' ' {
			s = append(s, c)
		}
	}
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	rem := 0
	for i := range s {
		c := s[(i+4)%len(s)]
		switch {
		case c >= '0' && c <= '9':
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			rem = (rem*100 + int(c-'A') + 10) % 97
		default:
			return false
		}
	}
	return rem == 1
}
