package pgproxy

import (
	"regexp"
	"strings"
	"unicode"
)

// splitStatements splits a simple-query string into statements on
// top-level semicolons, honouring quotes, dollar quotes and comments. Empty
// statements are dropped.
func splitStatements(q string) []string {
	var out []string
	start := 0
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '\'' || c == '"':
			for i++; i < len(q) && q[i] != c; i++ {
			}
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				i = len(q)
			} else {
				i += end + 3
			}
		case c == '$':
			j := i + 1
			for j < len(q) && (q[j] == '_' || unicode.IsLetter(rune(q[j])) || unicode.IsDigit(rune(q[j]))) {
				j++
			}
			if j < len(q) && q[j] == '$' {
				tag := q[i : j+1]
				end := strings.Index(q[j+1:], tag)
				if end < 0 {
					i = len(q)
				} else {
					i = j + end + len(tag)
				}
			}
		case c == ';':
			if s := strings.TrimSpace(q[start:i]); s != "" {
				out = append(out, s)
			}
			start = i + 1
		}
	}
	if start < len(q) {
		if s := strings.TrimSpace(q[start:]); s != "" {
			out = append(out, s)
		}
	}
	return out
}

var (
	lineComment  = regexp.MustCompile(`--[^\n]*`)
	blockComment = regexp.MustCompile(`(?s)/\*.*?\*/`)
	spaces       = regexp.MustCompile(`\s+`)
	whereWord    = regexp.MustCompile(`(?i)\bwhere\b`)
)

// normalize strips comments and collapses white space.
func normalize(stmt string) string {
	s := blockComment.ReplaceAllString(stmt, " ")
	s = lineComment.ReplaceAllString(s, " ")
	return strings.TrimSpace(spaces.ReplaceAllString(s, " "))
}

// Statement classes usable in rules as "sql:<class>".
const (
	ClassDrop          = "drop"
	ClassTruncate      = "truncate"
	ClassAlter         = "alter"
	ClassDeleteNoWhere = "delete-without-where"
	ClassUpdateNoWhere = "update-without-where"
	classPrefix        = "sql:"
)

// classes returns the classes of a normalized statement.
func classes(norm string) []string {
	// A leading WITH ... may precede the verb; look at the first verb.
	upper := strings.ToUpper(norm)
	verb := firstWord(upper)
	var out []string
	switch verb {
	case "DROP":
		out = append(out, ClassDrop)
	case "TRUNCATE":
		out = append(out, ClassTruncate)
	case "ALTER":
		out = append(out, ClassAlter)
	case "DELETE":
		if !whereWord.MatchString(norm) {
			out = append(out, ClassDeleteNoWhere)
		}
	case "UPDATE":
		if !whereWord.MatchString(norm) {
			out = append(out, ClassUpdateNoWhere)
		}
	}
	return out
}

func firstWord(s string) string {
	s = strings.TrimLeft(s, "( ")
	if i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsLetter(r) }); i >= 0 {
		return s[:i]
	}
	return s
}
