package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Samples are repeated measurements of one figure.
type Samples []float64

// Median returns the median of s, NaN if s is empty.
func (s Samples) Median() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// Min returns the smallest sample, NaN if s is empty.
func (s Samples) Min() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	return slices.Min(s)
}

// Max returns the largest sample, NaN if s is empty.
func (s Samples) Max() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	return slices.Max(s)
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of s by the nearest-rank
// method, NaN if s is empty.
func (s Samples) Quantile(q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(math.Ceil(q*float64(len(c)))) - 1
	return c[max(0, min(i, len(c)-1))]
}

// Figure is one measured quantity with its samples, summarised.
type Figure struct {
	// Median of the samples.
	Median float64 `json:"median"`
	// Min is the smallest sample (the low end of the spread).
	Min float64 `json:"min"`
	// Max is the largest sample (the high end of the spread).
	Max float64 `json:"max"`
	// N is the number of samples.
	N int `json:"n"`
	// Unit names the unit of the figure (MB/s, ms, sessions/s, KiB).
	Unit string `json:"unit"`
}

// NewFigure summarises samples in unit.
func NewFigure(unit string, s Samples) Figure {
	if len(s) == 0 {
		return Figure{Unit: unit}
	}
	return Figure{Median: s.Median(), Min: s.Min(), Max: s.Max(), N: len(s), Unit: unit}
}

// String formats the figure as "median (min–max) unit".
func (f Figure) String() string {
	if f.N == 0 {
		return "—"
	}
	if f.N == 1 || f.Min == f.Max {
		return fmt.Sprintf("%s %s", num(f.Median), f.Unit)
	}
	return fmt.Sprintf("%s (%s–%s) %s", num(f.Median), num(f.Min), num(f.Max), f.Unit)
}

// short formats the figure as "median (min–max)" without its unit.
func (f Figure) short() string {
	if f.N == 0 {
		return "—"
	}
	if f.N == 1 || f.Min == f.Max {
		return num(f.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", num(f.Median), num(f.Min), num(f.Max))
}

// Row is one line of the comparison: a figure of the table, its
// target, what was measured on each side and the resulting ratio (or, for
// rows with no OpenSSH side, postern's own figure against the target).
type Row struct {
	// Name is the figure, as in the table of targets.
	Name string `json:"name"`
	// Variant qualifies the row: cipher and workload.
	Variant string `json:"variant,omitempty"`
	// Client says which load generator drove the row (x/crypto or stock ssh).
	Client string `json:"client"`
	// Postern is postern's figure.
	Postern Figure `json:"postern"`
	// OpenSSH is the OpenSSH baseline; zero N when the row has none.
	OpenSSH Figure `json:"openssh"`
	// Value is the figure compared with the target: a ratio, a difference or
	// postern's own number.
	Value float64 `json:"value"`
	// ValueUnit names Value's unit ("×", "ms", "/s", "KiB").
	ValueUnit string `json:"value_unit"`
	// Target is the goal, e.g. "≥ 1.25".
	Target string `json:"target"`
	// Met reports whether Value meets Target; nil for rows reported only.
	Met *bool `json:"met,omitempty"`
	// Note explains how the row was measured.
	Note string `json:"note,omitempty"`
}

// Check sets Met from Value against a lower (atLeast) or upper bound and
// records the target text.
func (r *Row) Check(atLeast bool, bound float64) {
	ok := r.Value >= bound
	op := "≥"
	if !atLeast {
		ok = r.Value <= bound
		op = "≤"
	}
	r.Met = &ok
	r.Target = fmt.Sprintf("%s %s", op, num(bound))
	if r.ValueUnit != "×" && r.ValueUnit != "" {
		r.Target += " " + r.ValueUnit
	}
}

// Machine describes where the run happened.
type Machine struct {
	// CPUs is the number of CPUs Go sees (nproc).
	CPUs int `json:"cpus"`
	// CPUModel is the first "model name" of /proc/cpuinfo.
	CPUModel string `json:"cpu_model"`
	// SSH is what `ssh -V` prints.
	SSH string `json:"ssh"`
	// Go is the Go version the harness was built with.
	Go string `json:"go"`
	// Kernel is the Linux release; empty if unknown.
	Kernel string `json:"kernel,omitempty"`
}

// Report is a whole run.
type Report struct {
	// Started is when the run began (UTC).
	Started time.Time `json:"started"`
	// Duration is how long the run took.
	Duration string `json:"duration"`
	// Machine describes the host.
	Machine Machine `json:"machine"`
	// Settings states ciphers, key exchange, sizes and repetitions.
	Settings []string `json:"settings"`
	// Rows are the measurements in table order.
	Rows []Row `json:"rows"`
	// CPU is the CPU time per GiB of every process on each throughput
	// path.
	CPU []CPURow `json:"cpu,omitempty"`
}

// CPURow is the CPU time each process on one throughput path spent per GiB
// moved: the middle (postern, or OpenSSH's jump sshd with its
// per-connection processes), the target sshd with its session's
// processes, and the client. CPU time does not depend on how busy the
// machine is the way throughput does, so these figures compare runs taken
// under different loads.
type CPURow struct {
	// Path names the path ("postern inner hop, recorded").
	Path string `json:"path"`
	// Variant is the cipher and workload.
	Variant string `json:"variant"`
	// Client is the load client.
	Client string `json:"client"`
	// Side is "postern" or "OpenSSH".
	Side string `json:"side"`
	// Middle is the jump host's CPU per GiB.
	Middle Figure `json:"middle"`
	// Target is the target sshd's CPU per GiB (no samples when the target
	// is a TCP source in the harness's own process).
	Target Figure `json:"target"`
	// ClientCPU is the client's CPU per GiB.
	ClientCPU Figure `json:"client_cpu"`
	// Total is the sum over the path.
	Total Figure `json:"total"`
}

// WriteJSON writes r as indented JSON. JSON has no NaN or infinity: a
// figure that could not be computed is written as 0.
func (r *Report) WriteJSON(w io.Writer) error {
	c := *r
	c.Rows = slices.Clone(r.Rows)
	for i := range c.Rows {
		row := &c.Rows[i]
		for _, v := range []*float64{&row.Value, &row.Postern.Median, &row.Postern.Min, &row.Postern.Max,
			&row.OpenSSH.Median, &row.OpenSSH.Min, &row.OpenSSH.Max} {
			if math.IsNaN(*v) || math.IsInf(*v, 0) {
				*v = 0
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return nil
}

// WriteMarkdown writes r as the Markdown table docs/benchmarks.md quotes.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# postern vs OpenSSH, %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s, %s", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.SSH, r.Machine.Go)
	if r.Machine.Kernel != "" {
		fmt.Fprintf(&b, ", Linux %s", r.Machine.Kernel)
	}
	fmt.Fprintf(&b, ". Run took %s.\n\n", r.Duration)
	for _, s := range r.Settings {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	b.WriteString("\n| figure | variant | client | postern | OpenSSH | value | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		met := "(reported)"
		if row.Met != nil {
			met = "no"
			if *row.Met {
				met = "yes"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s %s | %s | %s |\n", cell(row.Name), cell(row.Variant), cell(row.Client),
			cell(row.Postern.String()), cell(row.OpenSSH.String()), num(row.Value), row.ValueUnit, cell(row.Target), met)
	}
	if len(r.CPU) > 0 {
		b.WriteString("\nCPU time per GiB moved, by process (user + system, ms/GiB; median (min–max)):\n\n")
		b.WriteString("| path | variant | client | jump host | target sshd | client | whole path |\n")
		b.WriteString("|---|---|---|---|---|---|---|\n")
		for _, c := range r.CPU {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", cell(c.Path), cell(c.Variant), cell(c.Client),
				cell(c.Middle.short()), cell(c.Target.short()), cell(c.ClientCPU.short()), cell(c.Total.short()))
		}
	}
	var notes []string
	for _, row := range r.Rows {
		if row.Note != "" && !slices.Contains(notes, row.Name+": "+row.Note) {
			notes = append(notes, row.Name+": "+row.Note)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nHow each row was measured:\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// cell escapes a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// num formats a number with three significant digits, without exponent for
// the magnitudes the report uses.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
