package config

// Search configures search across recordings (package search).
type Search struct {
	// Disabled turns indexing and search off; search is on by default.
	Disabled bool `yaml:"disabled"`
	// MaxOutputText bounds the terminal output text indexed per session, in
	// bytes (after escape sequences are removed and repeated lines
	// dropped); 16384 if zero; -1 indexes no output at all. Commands, typed
	// lines, SQL statements and SFTP operations are always indexed.
	MaxOutputText int `yaml:"max_output_text"`
}

// maxSearchOutputText bounds search.max_output_text.
const maxSearchOutputText = 64 << 20

// validateSearch checks search.
func (c *Config) validateSearch(v *validator) {
	if n := c.Search.MaxOutputText; n < -1 || n > maxSearchOutputText {
		v.add("search.max_output_text", "must be a number of bytes up to 67108864, 0 for the default or -1 for no output")
	}
}
