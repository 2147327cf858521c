// Package report turns the runs of a benchmark into its Markdown report: per
// path and concurrency the median and spread over repeated runs of
// throughput, latency percentiles and CPU cost, and the latency each hop adds
// over talking to the upstream directly.
package report

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/stats"
)

// Well-known path names: added latency is measured against Direct, and the
// gateway's added latency is compared with Proxy's and Durable's.
const (
	Direct  = "floor 1"
	Proxy   = "floor 2"
	Durable = "floor 3"
	Gateway = "gatehouse"
)

// Machine is where and what was measured.
type Machine struct {
	CPUs      int
	CPUModel  string
	Kernel    string
	GoVersion string
	Commit    string
	Date      time.Time
	// AuditDisk describes the file system floor 3 and the fdatasync probes
	// write to: the one holding the gateway's data dir.
	AuditDisk string
}

// Params are the knobs of the run, echoed in the report.
type Params struct {
	Command  string
	Sessions []int
	Sizes    []int            // arguments sizes in bytes
	Calls    map[Workload]int // measured calls per run
	Warmup   int              // warm-up calls per run
	Repeats  int
	Protocol string // MCP protocol version the client asks for
	// ProbeAppends is the number of fdatasynced appends per probe, and
	// RecordSize the bytes of each (and of floor 3's record per call).
	ProbeAppends int
	RecordSize   int
	// Quick marks a smoke-test run, too small for its figures to mean much.
	Quick bool
	// Observe is `gatebench observe`'s report: the costs of the gateway's variants
	// instead of the goals.
	Observe bool
}

// Workload is an arguments size and a concurrency level.
type Workload struct {
	Size, Sessions int
}

// Path is one way of reaching the echo tool.
type Path struct {
	Name        string
	Description string
	Hop         string // the process whose CPU is reported as the hop's ("" if none)
	Upstream    string // the process that answers ("" if none)
	Side        string // the path's own processes beside the hop ("" if none)
}

// Run is one measured closed-loop run.
type Run struct {
	Path     string
	Size     int // arguments bytes
	Sessions int
	Repeat   int // 1-based
	Outcome
}

// Outcome is what one closed-loop run measured, whatever its calls are (a tools/call here; a
// whole tools/list in the list benchmark).
type Outcome struct {
	// Calls is the number of successful measured calls; Errors the failed ones.
	Calls      int
	Errors     int
	FirstError string
	Elapsed    time.Duration
	Latency    stats.Latency
	// HopCPU, UpstreamCPU and ClientCPU are CPU time used during the
	// measured window by the path's hop process, its upstream and the load
	// generator itself; negative when not measured.
	HopCPU      time.Duration
	UpstreamCPU time.Duration
	ClientCPU   time.Duration
	// SideCPU is the CPU time of the path's side processes (and their children) in the
	// window; negative when the path has none.
	SideCPU time.Duration
	// Failed is set when the run could not be made at all.
	Failed string
}

// Probe is one timing of the audit disk: Appends appends of one small
// record, each followed by fdatasync, made in the interleaved cycle of
// (Size, Sessions, Repeat) just before its runs.
type Probe struct {
	Size, Sessions, Repeat int
	Appends                int
	Latency                stats.Latency // of one append + fdatasync, µs
	Failed                 string
}

// Throughput is successful calls per second (NaN for a failed run).
func (r Outcome) Throughput() float64 {
	if r.Failed != "" || r.Elapsed <= 0 {
		return math.NaN()
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// cpuPer1k is CPU seconds per 1,000 successful calls (NaN when unknown).
func (r Outcome) cpuPer1k(d time.Duration) float64 {
	if r.Failed != "" || d < 0 || r.Calls == 0 {
		return math.NaN()
	}
	return d.Seconds() / float64(r.Calls) * 1000
}

// Report is a whole benchmark.
type Report struct {
	Machine Machine
	Params  Params
	Paths   []Path
	Runs    []Run
	Probes  []Probe
	Notes   []string
}

// Cell is the summary of one path at one workload and concurrency.
type Cell struct {
	Throughput  stats.Summary // calls/s
	P50, P99    stats.Summary // µs
	HopCPU      stats.Summary // CPU s per 1,000 calls
	UpstreamCPU stats.Summary // CPU s per 1,000 calls
	ClientCPU   stats.Summary // CPU s per 1,000 calls
	Runs        int
	Failed      int
	Errors      int
	FirstError  string
}

// Cell summarises the runs of path at (size, sessions) over the repeats.
func (r *Report) Cell(path string, size, sessions int) Cell {
	var runs []Outcome
	for _, run := range r.Runs {
		if run.Path == path && run.Size == size && run.Sessions == sessions {
			runs = append(runs, run.Outcome)
		}
	}
	return Summarize(runs)
}

// Summarize summarises the runs of one cell over the repeats: the figures of those that
// were made, and the count of those that failed and of the calls that did.
func Summarize(runs []Outcome) Cell {
	var c Cell
	var tput, p50, p99, hop, up, client []float64
	for _, run := range runs {
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
		hop = append(hop, run.cpuPer1k(run.HopCPU))
		up = append(up, run.cpuPer1k(run.UpstreamCPU))
		client = append(client, run.cpuPer1k(run.ClientCPU))
	}
	c.Throughput = stats.Summarize(tput)
	c.P50 = stats.Summarize(p50)
	c.P99 = stats.Summarize(p99)
	c.HopCPU = stats.Summarize(hop)
	c.UpstreamCPU = stats.Summarize(up)
	c.ClientCPU = stats.Summarize(client)
	return c
}

// ErrorsText is a cell's errors column: the calls that failed, and the runs that could not
// be made if any.
func (c Cell) ErrorsText() string {
	text := fmt.Sprint(c.Errors)
	if c.Failed > 0 {
		text += fmt.Sprintf(", %d/%d runs failed", c.Failed, c.Runs)
	}
	return text
}

// Added is the latency a path adds over Direct, paired repeat by repeat (the
// runs of one repeat are adjacent in time), in µs.
type Added struct {
	P50, P99 stats.Summary
}

// Added computes what path adds over Direct at (size, sessions).
func (r *Report) Added(path string, size, sessions int) Added {
	type pair struct{ p50, p99 float64 }
	base := map[int]pair{}
	for _, run := range r.Runs {
		if run.Path == Direct && run.Size == size && run.Sessions == sessions && run.Failed == "" {
			base[run.Repeat] = pair{run.Latency.P50, run.Latency.P99}
		}
	}
	var p50, p99 []float64
	for _, run := range r.Runs {
		if run.Path != path || run.Size != size || run.Sessions != sessions || run.Failed != "" {
			continue
		}
		b, ok := base[run.Repeat]
		if !ok {
			continue
		}
		p50 = append(p50, run.Latency.P50-b.p50)
		p99 = append(p99, run.Latency.P99-b.p99)
	}
	return Added{P50: stats.Summarize(p50), P99: stats.Summarize(p99)}
}

// Ratio divides num by den: a gateway's median added latency by the proxy
// floor's, or one path's latency by another's. It is NaN when den is not
// positive: a ratio to noise means nothing.
func Ratio(num, den float64) float64 {
	if math.IsNaN(num) || math.IsNaN(den) || den <= 0 {
		return math.NaN()
	}
	return num / den
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	w := Printf(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })

	Head{
		Title: "Gatehouse benchmarks", Machine: r.Machine, Command: r.Params.Command,
		Extra: []string{"Audit disk: " + OrUnknown(r.Machine.AuditDisk)},
		Quick: r.Params.Quick, Units: "calls",
	}.Write(w)

	w("## Method\n\n")
	w("Each path reaches the same upstream, the example echo server (`examples/servers/echo`, official Go MCP SDK, Streamable HTTP on loopback); ")
	w("every process is on this machine and binds 127.0.0.1. The workload is `tools/call` of `echo`, whose JSON `arguments` object is exactly the stated size. ")
	w("A run is a closed loop: S sessions (each its own client connection pool; for MCP paths the official Go SDK client, initialized once with protocol %s) ", OrUnknown(r.Params.Protocol))
	w("make %d warm-up calls in total, then share the measured calls, each session issuing its next call when the previous one returns. ", r.Params.Warmup)
	w("Runs are interleaved path by path (%s, then again) and repeated %d times; ", strings.Join(r.pathNames(), ", "), r.Params.Repeats)
	w("every figure is the **median over the repeats, with the min–max range in parentheses**. ")
	w("p50/p99 are per-run latency percentiles of successful calls, measured by the client. ")
	w("Added latency is a path's p50 (p99) minus floor 1's in the same repeat; the ratios to floor 2 and floor 3 divide the medians. ")
	w("Floor 3 appends a %d-byte record to a file on the audit disk and fdatasyncs it before forwarding each POST (the gateway's write-ahead order: durable before the upstream sees the call), one fdatasync per call with no group commit of its own, so under concurrency a gateway that group-commits can beat it: the goals use it at 1 session only; ", r.Params.RecordSize)
	w("before the runs of each interleaved cycle the harness itself times %d such appends on the same file system (the fdatasync probe). ", r.Params.ProbeAppends)
	w("CPU is user+system time of a process during the measured window (from /proc/PID/stat, 10 ms resolution), per 1,000 calls; the client column is the load generator itself, which shares the machine with every other process. ")
	w("No figure here fails a build: the machine is shared and small, so compare paths within this report, not across reports; that is why the goals below are ratios between paths of this run.\n\n")

	WriteTableHead(w, "path", "what", "hop process", "upstream process")
	for _, p := range r.Paths {
		w("| %s | %s | %s | %s |\n", p.Name, p.Description, orDash(p.Hop), orDash(p.Upstream))
	}
	w("\n")
	r.writeDisk(w)
	if r.Params.Observe {
		r.writeCosts(w)
	} else {
		r.writeGoals(w)
	}

	for _, size := range r.Params.Sizes {
		w("## tools/call echo, %s arguments\n\n", bytesLabel(size))
		for _, sessions := range r.Params.Sessions {
			w("### %d session%s, %d calls per run\n\n", sessions, plural(sessions), r.Params.Calls[Workload{size, sessions}])
			WriteTableHead(w, "path", "calls/s", "p50 µs", "p99 µs", "hop CPU s/1k calls", "upstream CPU s/1k calls", "client CPU s/1k calls", "errors")
			for _, p := range r.Paths {
				c := r.Cell(p.Name, size, sessions)
				if c.Runs == 0 {
					continue
				}
				w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", p.Name,
					FormatSummary(c.Throughput, 0), FormatSummary(c.P50, 0), FormatSummary(c.P99, 0),
					FormatSummary(c.HopCPU, 3), FormatSummary(c.UpstreamCPU, 3), FormatSummary(c.ClientCPU, 3), c.ErrorsText())
			}
			w("\n")
		}

		gateways := r.gatewayPaths()
		if len(gateways) == 0 || !slices.ContainsFunc(r.Paths, func(p Path) bool { return p.Name == Direct }) {
			continue
		}
		w("#### Latency added over floor 1, %s arguments (µs)\n\n", bytesLabel(size))
		WriteTableHead(w, "sessions", "path", "added p50", "added p99", "ratio to floor 2, p50", "ratio to floor 2, p99", "ratio to floor 3, p50")
		for _, sessions := range r.Params.Sessions {
			floor2 := r.Added(Proxy, size, sessions)
			floor3 := r.Added(Durable, size, sessions)
			for _, g := range gateways {
				a := r.Added(g, size, sessions)
				if a.P50.N == 0 {
					continue
				}
				ratio50, ratio99, ratio3 := "—", "—", "—"
				if g != Proxy {
					ratio50 = ratioText(Ratio(a.P50.Median, floor2.P50.Median))
					ratio99 = ratioText(Ratio(a.P99.Median, floor2.P99.Median))
				}
				if g != Proxy && g != Durable && floor3.P50.N > 0 {
					ratio3 = ratioText(Ratio(a.P50.Median, floor3.P50.Median))
				}
				w("| %d | %s | %s | %s | %s | %s | %s |\n", sessions, g, FormatSummary(a.P50, 0), FormatSummary(a.P99, 0), ratio50, ratio99, ratio3)
			}
		}
		w("\n")
	}

	WriteSection(w, "Errors", r.errorSamples())
	WriteNotes(w, r.Notes)

	OpenRuns(w, "#", "arguments", "sessions", "repeat", "path", "calls", "errors", "seconds", "calls/s", "p50 µs", "p99 µs", "max µs", "hop CPU s", "upstream CPU s", "client CPU s")
	for i, run := range r.Runs {
		if run.Failed != "" {
			w("| %d | %s | %d | %d | %s | failed: %s ||||||||||\n", i+1, bytesLabel(run.Size), run.Sessions, run.Repeat, run.Path, OneLine(run.Failed, 300))
			continue
		}
		w("| %d | %s | %d | %d | %s | %d | %d | %.3f | %.0f | %.0f | %.0f | %.0f | %s | %s | %s |\n",
			i+1, bytesLabel(run.Size), run.Sessions, run.Repeat, run.Path, run.Calls, run.Errors,
			run.Elapsed.Seconds(), run.Throughput(), run.Latency.P50, run.Latency.P99, run.Latency.Max,
			FormatCPU(run.HopCPU), FormatCPU(run.UpstreamCPU), FormatCPU(run.ClientCPU))
	}
	CloseRuns(w)
	return b.String()
}

// writeDisk renders the fdatasync probes.
func (r *Report) writeDisk(w Printf) {
	if len(r.Probes) == 0 {
		return
	}
	w("## The audit disk\n\n")
	p50, p99 := r.ProbeSummary(Workload{})
	w("One append of a %d-byte record followed by fdatasync, on %s: **p50 %s µs, p99 %s µs** (median over %d probes of %d appends each, min–max in parentheses).\n\n",
		r.Params.RecordSize, OrUnknown(r.Machine.AuditDisk), FormatSummary(p50, 0), FormatSummary(p99, 0), p50.N, r.Params.ProbeAppends)
	WriteTableHead(w, "arguments", "sessions", "fdatasync p50 µs", "fdatasync p99 µs", "probes")
	for _, size := range r.Params.Sizes {
		for _, sessions := range r.Params.Sessions {
			a, b := r.ProbeSummary(Workload{size, sessions})
			if a.N == 0 {
				continue
			}
			w("| %s | %d | %s | %s | %d |\n", bytesLabel(size), sessions, FormatSummary(a, 0), FormatSummary(b, 0), a.N)
		}
	}
	w("\n")
	for _, p := range r.Probes {
		if p.Failed != "" {
			w("A probe failed (%s, %d sessions, repeat %d): %s\n\n", bytesLabel(p.Size), p.Sessions, p.Repeat, OneLine(p.Failed, 300))
			break
		}
	}
}

// writeGoals renders the goals of issue 5, item 9.
func (r *Report) writeGoals(w Printf) {
	w("## Goals\n\n")
	w("Each ratio is computed per repeat from the runs of one interleaved cycle (which ran back to back) and summarised as median (min–max) over the repeats; ")
	w("a goal is met when the median meets its bound. Added p50 is over floor 1; the fdatasync p50 is the probe made just before that cycle.\n\n")
	WriteTableHead(w, "goal", "workload", "bound", "measured", "repeats within bound", "status", "from (medians)")
	for _, g := range r.Goals() {
		workload, measured, within, detail := "—", "—", "—", g.Detail
		if g.Workload != (Workload{}) {
			workload = fmt.Sprintf("%s, %d session%s", bytesLabel(g.Workload.Size), g.Workload.Sessions, plural(g.Workload.Sessions))
		}
		if g.Ratio.N > 0 {
			measured = FormatSummary(g.Ratio, 2)
			within = fmt.Sprintf("%d/%d", g.Within, g.Ratio.N)
		}
		if g.Missing != "" {
			detail = g.Missing
		}
		w("| (%s) %s | %s | %s | %s | %s | **%s** | %s |\n", g.ID, g.Title, workload, g.BoundText(), measured, within, g.Status(), OneLine(detail, 300))
	}
	w("\n")
}

// pathNames lists the paths in run order.
func (r *Report) pathNames() []string {
	names := make([]string, len(r.Paths))
	for i, p := range r.Paths {
		names[i] = p.Name
	}
	return names
}

// gatewayPaths are the paths whose added latency is reported: floor 2 and
// everything after it.
func (r *Report) gatewayPaths() []string {
	var out []string
	for _, p := range r.Paths {
		if p.Name != Direct && p.Hop != "" {
			out = append(out, p.Name)
		}
	}
	return out
}

// errorSamples gives the first error of each cell that had any.
func (r *Report) errorSamples() []string {
	seen := map[string]bool{}
	var out []string
	for _, run := range r.Runs {
		msg := run.Failed
		if msg == "" {
			msg = run.FirstError
		}
		if msg == "" {
			continue
		}
		key := fmt.Sprintf("%s %d %d", run.Path, run.Size, run.Sessions)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, fmt.Sprintf("%s, %s, %d session%s: %s", run.Path, bytesLabel(run.Size), run.Sessions, plural(run.Sessions), OneLine(msg, 300)))
	}
	return out
}
