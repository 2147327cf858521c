package lists

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/caller"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/report"
	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// Path is one way of seeing the tools, as the report names it.
type Path struct {
	Key         string // one of AllPaths
	Name        string
	Description string
	// WantTools is how many tools one list must hold (every call checks the names).
	WantTools int
}

// Result is one measured closed-loop run of one path.
type Result struct {
	Path   string // key
	Repeat int    // 1-based
	// Lists is the number of successful measured lists; Errors the failed ones.
	Lists      int
	Errors     int
	FirstError string
	Elapsed    time.Duration
	Latency    stats.Latency // of one list (of every target, for direct ×3), µs
	// Answer is what the run's last list saw.
	Answer caller.ListAnswer
	// GatewayCPU, UpstreamCPU (the three servers summed) and ClientCPU are CPU time used
	// during the measured window; negative when not measured.
	GatewayCPU, UpstreamCPU, ClientCPU time.Duration
	// Failed is set when the run could not be made at all.
	Failed string
}

// cpuPer1k is CPU seconds per 1,000 successful lists (NaN when unknown).
func (r Result) cpuPer1k(d time.Duration) float64 {
	if r.Failed != "" || d < 0 || r.Lists == 0 {
		return math.NaN()
	}
	return d.Seconds() / float64(r.Lists) * 1000
}

// Throughput is successful lists per second (NaN for a failed run).
func (r Result) Throughput() float64 {
	if r.Failed != "" || r.Elapsed <= 0 {
		return math.NaN()
	}
	return float64(r.Lists) / r.Elapsed.Seconds()
}

// Params are the knobs of the run, echoed in the report.
type Params struct {
	Command    string
	Servers    int // upstream servers
	ExtraTools int // synthetic tools of each
	Lists      int // measured lists per run
	Warmup     int // lists per run before the measured window
	Repeats    int
	Protocol   string
	PageSize   int // the gateway's --list-page-size
	Quick      bool
}

// Report is a whole list benchmark.
type Report struct {
	Machine report.Machine
	Params  Params
	Paths   []Path
	Runs    []Result
	// Profile is the top of a CPU profile of the gateway serving aggregated lists ("" when
	// none was taken).
	Profile string
	Notes   []string
}

// Cell summarises one path over the repeats.
type Cell struct {
	Throughput                         stats.Summary // lists/s
	P50, P99                           stats.Summary // µs
	GatewayCPU, UpstreamCPU, ClientCPU stats.Summary // CPU s per 1,000 lists
	// Tools, Pages and Bytes of the runs' last answers (min and max: a list whose size
	// changes between runs shows it).
	Tools, Pages, Bytes [2]int64
	Runs, Failed        int
	Errors              int
	FirstError          string
}

// Cell summarises the runs of path (a key).
func (r *Report) Cell(path string) Cell {
	c := Cell{Tools: [2]int64{-1, -1}, Pages: [2]int64{-1, -1}, Bytes: [2]int64{-1, -1}}
	var tput, p50, p99, gw, up, client []float64
	for _, run := range r.Runs {
		if run.Path != path {
			continue
		}
		c.Runs++
		if run.Failed != "" {
			c.Failed++
			if c.FirstError == "" {
				c.FirstError = run.Failed
			}
			continue
		}
		c.Errors += run.Errors
		if c.FirstError == "" {
			c.FirstError = run.FirstError
		}
		tput = append(tput, run.Throughput())
		p50 = append(p50, run.Latency.P50)
		p99 = append(p99, run.Latency.P99)
		gw = append(gw, run.cpuPer1k(run.GatewayCPU))
		up = append(up, run.cpuPer1k(run.UpstreamCPU))
		client = append(client, run.cpuPer1k(run.ClientCPU))
		if run.Lists > 0 {
			widen(&c.Tools, int64(run.Answer.Tools))
			widen(&c.Pages, int64(run.Answer.Pages))
			widen(&c.Bytes, run.Answer.Bytes)
		}
	}
	c.Throughput = stats.Summarize(tput)
	c.P50 = stats.Summarize(p50)
	c.P99 = stats.Summarize(p99)
	c.GatewayCPU = stats.Summarize(gw)
	c.UpstreamCPU = stats.Summarize(up)
	c.ClientCPU = stats.Summarize(client)
	return c
}

func widen(span *[2]int64, v int64) {
	if span[0] < 0 || v < span[0] {
		span[0] = v
	}
	if v > span[1] {
		span[1] = v
	}
}

// RatioSpec is one ratio the report gives: Num's latency over Den's.
type RatioSpec struct {
	Num, Den string // path keys
	What     string
}

// Ratios are the comparisons the benchmark exists for.
var Ratios = []RatioSpec{
	{Num: GatewayAll, Den: Direct3, What: "aggregated ÷ direct ×3: what one list of everything through the gateway costs against the host fetching the three lists itself"},
	{Num: GatewayAll, Den: GatewayOne, What: "aggregated ÷ one server through the gateway: the cost of the fan-out and merge over one server's list"},
	{Num: GatewayOne, Den: Direct, What: "one server through the gateway ÷ direct: the gateway's cost on one server's list"},
}

// Ratio is a RatioSpec's value per repeat (the runs of one repeat are adjacent in time).
type Ratio struct {
	P50, P99 stats.Summary
}

// Ratio computes num's latency over den's, repeat by repeat.
func (r *Report) Ratio(num, den string) Ratio {
	type pair struct{ p50, p99 float64 }
	byRepeat := func(path string) map[int]pair {
		out := map[int]pair{}
		for _, run := range r.Runs {
			if run.Path == path && run.Failed == "" && run.Lists > 0 {
				out[run.Repeat] = pair{run.Latency.P50, run.Latency.P99}
			}
		}
		return out
	}
	n, d := byRepeat(num), byRepeat(den)
	var p50, p99 []float64
	for repeat, a := range n {
		b, ok := d[repeat]
		if !ok {
			continue
		}
		p50 = append(p50, divide(a.p50, b.p50))
		p99 = append(p99, divide(a.p99, b.p99))
	}
	return Ratio{P50: stats.Summarize(p50), P99: stats.Summarize(p99)}
}

// divide is a/b, NaN when b is not positive.
func divide(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b <= 0 {
		return math.NaN()
	}
	return a / b
}

// Err says why the benchmark's figures cannot be trusted: a run that failed or a list that
// did not hold what it should. Nil when every measured list was right.
func (r *Report) Err() error {
	var errs []error
	for _, p := range r.Paths {
		c := r.Cell(p.Key)
		switch {
		case c.Runs == 0:
			errs = append(errs, fmt.Errorf("%s: no run", p.Name))
		case c.Failed > 0 || c.Errors > 0:
			errs = append(errs, fmt.Errorf("%s: %d of %d runs failed, %d lists wrong or failed; first: %s", p.Name, c.Failed, c.Runs, c.Errors, c.FirstError))
		case c.Tools[0] != int64(p.WantTools) || c.Tools[1] != int64(p.WantTools):
			errs = append(errs, fmt.Errorf("%s: lists held %d to %d tools, want %d", p.Name, c.Tools[0], c.Tools[1], p.WantTools))
		}
	}
	return errors.Join(errs...)
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("# Gatehouse benchmarks: tools/list of a large aggregated list\n\n")
	m := r.Machine
	w("- Date: %s\n", m.Date.UTC().Format("2006-01-02 15:04 MST"))
	w("- Commit: %s\n", orUnknown(m.Commit))
	w("- Machine: %d CPUs, %s; %s\n", m.CPUs, orUnknown(m.CPUModel), orUnknown(m.Kernel))
	w("- Go: %s\n", orUnknown(m.GoVersion))
	w("- Command: `%s`\n\n", r.Params.Command)
	if r.Params.Quick {
		w("> **Quick run (smoke test):** too few lists and repeats for any figure here to mean anything; it shows that the harness works end to end.\n\n")
	}

	p := r.Params
	w("## Method\n\n")
	w("%d example echo servers (`examples/servers/echo -extra-tools %d`, official Go MCP SDK, Streamable HTTP on loopback) each list their own tools and %d synthetic ones (a title, a one-sentence description and a three-property input schema each); ", p.Servers, p.ExtraTools, p.ExtraTools)
	w("`gatehouse up` (single process, with `--list-page-size %d`) fronts all of them, each approved for the benchmark's tenant. ", p.PageSize)
	w("The workload is `tools/list` (every page of it), made by the official Go SDK client on one session initialized once with protocol %s, in a closed loop: %d warm-up lists, then %d measured ones, each issued when the previous one returned. ", orUnknown(p.Protocol), p.Warmup, p.Lists)
	w("Every list is checked: it must hold exactly the expected tool names (for the aggregated endpoint, every server's tools named `<server>__<tool>`), or the benchmark fails. ")
	w("Runs are interleaved path by path (%s, then again) and repeated %d times; every figure is the **median over the repeats, with the min–max range in parentheses**. ", strings.Join(r.pathNames(), ", "), p.Repeats)
	w("p50/p99 are per-run latency percentiles of one list as the client measures it; for direct ×3 one list is the three servers' lists fetched one after another. ")
	w("Bytes are the HTTP bodies of the answers as read from the wire (with SSE framing where the server streamed), summed over the pages and servers of one list. ")
	w("CPU is user+system time during the measured window (from /proc/PID/stat, 10 ms resolution) per 1,000 lists: of the gateway process, of the three upstreams summed, and of the load generator itself. ")
	w("Every latency includes the client's own decoding of the answer (the SDK reads each tool's schema), a cost proportional to the tools listed and the same on paths of the same list: the client column shows it. ")
	w("Ratios divide one path's percentile by another's in the same repeat, then take the median and range over the repeats. ")
	w("The machine is shared and small: compare paths within this report, not across reports.\n\n")

	w("| path | what | tools per list |\n|---|---|---|\n")
	for _, path := range r.Paths {
		w("| %s | %s | %d |\n", oneLine(path.Name, 100), oneLine(path.Description, 500), path.WantTools)
	}
	w("\n## Results\n\n")
	w("| path | tools | pages | bytes | lists/s | p50 ms | p99 ms | gateway CPU s/1k lists | upstreams CPU s/1k lists | client CPU s/1k lists | errors |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, path := range r.Paths {
		c := r.Cell(path.Key)
		if c.Runs == 0 {
			continue
		}
		errs := fmt.Sprint(c.Errors)
		if c.Failed > 0 {
			errs += fmt.Sprintf(", %d/%d runs failed", c.Failed, c.Runs)
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", path.Name,
			span(c.Tools), span(c.Pages), span(c.Bytes), summary(c.Throughput, 0, 1),
			summary(c.P50, 2, 1e-3), summary(c.P99, 2, 1e-3),
			summary(c.GatewayCPU, 3, 1), summary(c.UpstreamCPU, 3, 1), summary(c.ClientCPU, 3, 1), errs)
	}
	w("\n## Ratios\n\n")
	w("| ratio | p50 | p99 |\n|---|---|---|\n")
	for _, spec := range Ratios {
		if !r.hasPath(spec.Num) || !r.hasPath(spec.Den) {
			continue
		}
		ratio := r.Ratio(spec.Num, spec.Den)
		w("| %s | %s | %s |\n", spec.What, ratioSummary(ratio.P50), ratioSummary(ratio.P99))
	}
	w("\n")

	if r.Profile != "" {
		w("## Where the gateway spends its CPU on aggregated lists\n\n")
		w("A CPU profile of `gatehouse up` (`--debug-addr`, /debug/pprof/profile) while one session listed the aggregated endpoint in a closed loop, after the measured runs; `go tool pprof -top`, by cumulative and by flat time:\n\n")
		w("```\n%s\n```\n\n", strings.TrimSpace(r.Profile))
	}
	if err := r.Err(); err != nil {
		w("## Errors\n\n")
		for line := range strings.SplitSeq(err.Error(), "\n") {
			w("- %s\n", oneLine(line, 500))
		}
		w("\n")
	}
	if len(r.Notes) > 0 {
		w("## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", oneLine(n, 2000))
		}
		w("\n")
	}

	w("<details><summary>Every run, in the order it ran</summary>\n\n")
	w("| # | repeat | path | lists | errors | seconds | p50 ms | p99 ms | max ms | bytes | gateway CPU s | upstreams CPU s | client CPU s |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, run := range r.Runs {
		if run.Failed != "" {
			w("| %d | %d | %s | failed: %s ||||||||||\n", i+1, run.Repeat, r.pathName(run.Path), oneLine(run.Failed, 300))
			continue
		}
		w("| %d | %d | %s | %d | %d | %.3f | %.2f | %.2f | %.2f | %d | %s | %s | %s |\n",
			i+1, run.Repeat, r.pathName(run.Path), run.Lists, run.Errors, run.Elapsed.Seconds(),
			run.Latency.P50/1e3, run.Latency.P99/1e3, run.Latency.Max/1e3, run.Answer.Bytes,
			cpuText(run.GatewayCPU), cpuText(run.UpstreamCPU), cpuText(run.ClientCPU))
	}
	w("\n</details>\n")
	return b.String()
}

func (r *Report) hasPath(key string) bool {
	for _, p := range r.Paths {
		if p.Key == key {
			return true
		}
	}
	return false
}

func (r *Report) pathName(key string) string {
	for _, p := range r.Paths {
		if p.Key == key {
			return p.Name
		}
	}
	return key
}

func (r *Report) pathNames() []string {
	out := make([]string, len(r.Paths))
	for i, p := range r.Paths {
		out[i] = p.Name
	}
	return out
}

// summary formats "median (min–max)" of s scaled by scale; "—" when empty.
func summary(s stats.Summary, decimals int, scale float64) string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 {
		return num(s.Median*scale, decimals)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Median*scale, decimals), num(s.Min*scale, decimals), num(s.Max*scale, decimals))
}

func ratioSummary(s stats.Summary) string {
	if s.N == 0 || math.IsNaN(s.Median) {
		return "n/a"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.2f×", s.Median)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", s.Median, s.Min, s.Max)
}

// span renders a [min, max] of counts: "309", "300–309", "—" when unknown.
func span(s [2]int64) string {
	switch {
	case s[0] < 0:
		return "—"
	case s[0] == s[1]:
		return fmt.Sprint(s[0])
	}
	return fmt.Sprintf("%d–%d", s[0], s[1])
}

func num(x float64, decimals int) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf("%.*f", decimals, x)
}

func cpuText(d time.Duration) string {
	if d < 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", d.Seconds())
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// oneLine keeps a message from breaking a Markdown table or list, and cuts it to about
// limit bytes.
func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "…"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}
