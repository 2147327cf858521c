package lists

import (
	"errors"
	"fmt"
	"math"
	"strings"

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

// Result is one measured closed-loop run of one path. Its Outcome counts lists as calls,
// a list being every page of it (of every target, for direct ×3); HopCPU is the gateway's
// (measured whenever the gateway runs, whatever the path) and UpstreamCPU the three
// servers' summed.
type Result struct {
	Path   string // key
	Repeat int    // 1-based
	report.Outcome
	// Answer is what the run's last list saw.
	Answer caller.ListAnswer
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

// Cell summarises one path over the repeats: the figures of report.Cell (lists counted as
// calls, the gateway as the hop) and the size of the lists.
type Cell struct {
	report.Cell
	// Tools, Pages and Bytes of the runs' last answers (min and max: a list whose size
	// changes between runs shows it).
	Tools, Pages, Bytes [2]int64
}

// Cell summarises the runs of path (a key).
func (r *Report) Cell(path string) Cell {
	c := Cell{Tools: [2]int64{-1, -1}, Pages: [2]int64{-1, -1}, Bytes: [2]int64{-1, -1}}
	var runs []report.Outcome
	for _, run := range r.Runs {
		if run.Path != path {
			continue
		}
		runs = append(runs, run.Outcome)
		if run.Failed == "" && run.Calls > 0 {
			widen(&c.Tools, int64(run.Answer.Tools))
			widen(&c.Pages, int64(run.Answer.Pages))
			widen(&c.Bytes, run.Answer.Bytes)
		}
	}
	c.Cell = report.Summarize(runs)
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
			if run.Path == path && run.Failed == "" && run.Calls > 0 {
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
		p50 = append(p50, report.Ratio(a.p50, b.p50))
		p99 = append(p99, report.Ratio(a.p99, b.p99))
	}
	return Ratio{P50: stats.Summarize(p50), P99: stats.Summarize(p99)}
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
	w := report.Printf(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })

	report.Head{
		Title: "Gatehouse benchmarks: tools/list of a large aggregated list", Machine: r.Machine,
		Command: r.Params.Command, Quick: r.Params.Quick, Units: "lists",
	}.Write(w)

	p := r.Params
	w("## Method\n\n")
	w("%d example echo servers (`examples/servers/echo -extra-tools %d`, official Go MCP SDK, Streamable HTTP on loopback) each list their own tools and %d synthetic ones (a title, a one-sentence description and a three-property input schema each); ", p.Servers, p.ExtraTools, p.ExtraTools)
	w("`gatehouse up` (single process, with `--list-page-size %d`) fronts all of them, each approved for the benchmark's tenant. ", p.PageSize)
	w("The workload is `tools/list` (every page of it), made by the official Go SDK client on one session initialized once with protocol %s, in a closed loop: %d warm-up lists, then %d measured ones, each issued when the previous one returned. ", report.OrUnknown(p.Protocol), p.Warmup, p.Lists)
	w("Every list is checked: it must hold exactly the expected tool names (for the aggregated endpoint, every server's tools named `<server>__<tool>`), or the benchmark fails. ")
	w("Runs are interleaved path by path (%s, then again) and repeated %d times; every figure is the **median over the repeats, with the min–max range in parentheses**. ", strings.Join(r.pathNames(), ", "), p.Repeats)
	w("p50/p99 are per-run latency percentiles of one list as the client measures it; for direct ×3 one list is the three servers' lists fetched one after another. ")
	w("Bytes are the HTTP bodies of the answers as read from the wire (with SSE framing where the server streamed), summed over the pages and servers of one list. ")
	w("CPU is user+system time during the measured window (from /proc/PID/stat, 10 ms resolution) per 1,000 lists: of the gateway process, of the three upstreams summed, and of the load generator itself. ")
	w("Every latency includes the client's own decoding of the answer (the SDK reads each tool's schema), a cost proportional to the tools listed and the same on paths of the same list: the client column shows it. ")
	w("Ratios divide one path's percentile by another's in the same repeat, then take the median and range over the repeats. ")
	w("The machine is shared and small: compare paths within this report, not across reports.\n\n")

	report.WriteTableHead(w, "path", "what", "tools per list")
	for _, path := range r.Paths {
		w("| %s | %s | %d |\n", report.OneLine(path.Name, 100), report.OneLine(path.Description, 500), path.WantTools)
	}
	w("\n## Results\n\n")
	report.WriteTableHead(w, "path", "tools", "pages", "bytes", "lists/s", "p50 ms", "p99 ms", "gateway CPU s/1k lists", "upstreams CPU s/1k lists", "client CPU s/1k lists", "errors")
	for _, path := range r.Paths {
		c := r.Cell(path.Key)
		if c.Runs == 0 {
			continue
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", path.Name,
			span(c.Tools), span(c.Pages), span(c.Bytes), report.FormatSummary(c.Throughput, 0),
			report.FormatSummary(c.P50.Scale(1e-3), 2), report.FormatSummary(c.P99.Scale(1e-3), 2),
			report.FormatSummary(c.HopCPU, 3), report.FormatSummary(c.UpstreamCPU, 3), report.FormatSummary(c.ClientCPU, 3), c.ErrorsText())
	}
	w("\n## Ratios\n\n")
	report.WriteTableHead(w, "ratio", "p50", "p99")
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
		var lines []string
		for line := range strings.SplitSeq(err.Error(), "\n") {
			lines = append(lines, report.OneLine(line, 500))
		}
		report.WriteSection(w, "Errors", lines)
	}
	report.WriteNotes(w, r.Notes)

	report.OpenRuns(w, "#", "repeat", "path", "lists", "errors", "seconds", "p50 ms", "p99 ms", "max ms", "bytes", "gateway CPU s", "upstreams CPU s", "client CPU s")
	for i, run := range r.Runs {
		if run.Failed != "" {
			w("| %d | %d | %s | failed: %s ||||||||||\n", i+1, run.Repeat, r.pathName(run.Path), report.OneLine(run.Failed, 300))
			continue
		}
		w("| %d | %d | %s | %d | %d | %.3f | %.2f | %.2f | %.2f | %d | %s | %s | %s |\n",
			i+1, run.Repeat, r.pathName(run.Path), run.Calls, run.Errors, run.Elapsed.Seconds(),
			run.Latency.P50/1e3, run.Latency.P99/1e3, run.Latency.Max/1e3, run.Answer.Bytes,
			report.FormatCPU(run.HopCPU), report.FormatCPU(run.UpstreamCPU), report.FormatCPU(run.ClientCPU))
	}
	report.CloseRuns(w)
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
