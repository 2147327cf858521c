package report

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// The pieces every benchmark's Markdown report is made of: its head, its notes, its tables,
// and the way a figure is written in them.

// Printf writes formatted Markdown to a report being rendered.
type Printf func(format string, args ...any)

// Head is what opens a report: its title and the bullets saying when, at which commit,
// where and how it ran.
type Head struct {
	Title   string
	Machine Machine
	Command string
	// Extra are bullets written before the command line (the audit disk).
	Extra []string
	// Quick marks a smoke-test run: a banner says that too few Units (calls, lists) and
	// repeats were made for any figure to mean anything.
	Quick bool
	Units string
}

// Write writes the head.
func (h Head) Write(w Printf) {
	m := h.Machine
	w("# %s\n\n", h.Title)
	w("- Date: %s\n", m.Date.UTC().Format("2006-01-02 15:04 MST"))
	w("- Commit: %s\n", OrUnknown(m.Commit))
	w("- Machine: %d CPUs, %s; %s\n", m.CPUs, OrUnknown(m.CPUModel), OrUnknown(m.Kernel))
	w("- Go: %s\n", OrUnknown(m.GoVersion))
	for _, e := range h.Extra {
		w("- %s\n", e)
	}
	w("- Command: `%s`\n\n", h.Command)
	if h.Quick {
		w("> **Quick run (smoke test):** too few %s and repeats for any figure here to mean anything; it shows that the harness works end to end.\n\n", h.Units)
	}
}

// WriteSection writes a section of bullets, each as given; nothing when there are none.
func WriteSection(w Printf, heading string, bullets []string) {
	if len(bullets) == 0 {
		return
	}
	w("## %s\n\n", heading)
	for _, b := range bullets {
		w("- %s\n", b)
	}
	w("\n")
}

// WriteNotes writes the notes of a run (processes that died, paths left out), each on one
// line.
func WriteNotes(w Printf, notes []string) {
	lines := make([]string, len(notes))
	for i, n := range notes {
		lines[i] = OneLine(n, 2000)
	}
	WriteSection(w, "Notes", lines)
}

// WriteTableHead writes the header row of a table and the row under it.
func WriteTableHead(w Printf, columns ...string) {
	w("| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
}

// OpenRuns opens the folded table of every run of a report, under the header columns.
func OpenRuns(w Printf, columns ...string) {
	w("<details><summary>Every run, in the order it ran</summary>\n\n")
	WriteTableHead(w, columns...)
}

// CloseRuns closes what OpenRuns opened.
func CloseRuns(w Printf) {
	w("\n</details>\n")
}

// FormatSummary writes "median (min–max)" with the given decimals, only the median when
// there is one sample, "—" when there is none.
func FormatSummary(s stats.Summary, decimals int) string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 {
		return num(s.Median, decimals)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Median, decimals), num(s.Min, decimals), num(s.Max, decimals))
}

func num(x float64, decimals int) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf("%.*f", decimals, x)
}

func ratioText(x float64) string {
	if math.IsNaN(x) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f×", x)
}

// FormatCPU writes a CPU time in seconds, "—" when it was not measured (negative).
func FormatCPU(d time.Duration) string {
	if d < 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", d.Seconds())
}

// bytesLabel renders an arguments size: 64 B, 16 KiB.
func bytesLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// OrUnknown is s, or "unknown" when it is empty.
func OrUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// OneLine keeps a message from breaking a Markdown table or list, and cuts it to about limit
// bytes.
func OneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "…"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}
