package nodepeer

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// Status is the outcome of one conformance check, as the suite writes it.
type Status string

// The statuses @modelcontextprotocol/conformance reports. Only FAILURE counts against a
// server; WARNING and INFO mark optional behaviour (e.g. a server that answers JSON instead of
// SSE streams).
const (
	StatusSuccess Status = "SUCCESS"
	StatusFailure Status = "FAILURE"
	StatusWarning Status = "WARNING"
	StatusSkipped Status = "SKIPPED"
	StatusInfo    Status = "INFO"
)

// ActiveServerChecks are the ids of the 40 checks the active server suite of
// @modelcontextprotocol/conformance 0.1.16 runs, in order; all pass directly against the Go
// SDK conformance server (-stateless=false). A gateway in front of it should pass the same.
var ActiveServerChecks = []string{
	"server-initialize",
	"logging-set-level",
	"ping",
	"completion-complete",
	"tools-list",
	"tools-call-simple-text",
	"tools-call-image",
	"tools-call-audio",
	"tools-call-embedded-resource",
	"tools-call-mixed-content",
	"tools-call-with-logging",
	"tools-call-error",
	"tools-call-with-progress",
	"tools-call-sampling",
	"tools-call-elicitation",
	"elicitation-sep1034-string-default",
	"elicitation-sep1034-integer-default",
	"elicitation-sep1034-number-default",
	"elicitation-sep1034-enum-default",
	"elicitation-sep1034-boolean-default",
	"server-accepts-multiple-post-streams",
	"server-sse-streams-functional",
	"elicitation-sep1330-untitled-single",
	"elicitation-sep1330-titled-single",
	"elicitation-sep1330-legacy-enumnames",
	"elicitation-sep1330-untitled-multi",
	"elicitation-sep1330-titled-multi",
	"resources-list",
	"resources-read-text",
	"resources-read-binary",
	"resources-templates-read",
	"resources-subscribe",
	"resources-unsubscribe",
	"prompts-list",
	"prompts-get-simple",
	"prompts-get-with-args",
	"prompts-get-embedded-resource",
	"prompts-get-with-image",
	"localhost-host-rebinding-rejected",
	"localhost-host-valid-accepted",
}

// Check is one conformance check result (one element of a scenario's checks.json).
type Check struct {
	// Scenario is the suite scenario that produced the check, e.g. "dns-rebinding-protection".
	Scenario     string          `json:"-"`
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Description  string          `json:"description"`
	Status       Status          `json:"status"`
	ErrorMessage string          `json:"errorMessage,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
}

// Result is one run of the conformance suite.
type Result struct {
	// Checks in the order the suite ran them.
	Checks []Check
	// Output is the suite's combined stdout and stderr (bounded), for failure messages.
	Output string
	// Duration is the suite's wall-clock time.
	Duration time.Duration
}

// Statuses maps each check id to its status.
func (r Result) Statuses() map[string]Status {
	m := make(map[string]Status, len(r.Checks))
	for _, c := range r.Checks {
		m[c.ID] = c.Status
	}
	return m
}

// Passed reports whether the check with this id ran and succeeded.
func (r Result) Passed(id string) bool {
	return r.Statuses()[id] == StatusSuccess
}

// Failures returns the checks with status FAILURE.
func (r Result) Failures() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == StatusFailure {
			out = append(out, c)
		}
	}
	return out
}

// Problems lists, one line each, why the run is not a pass of the suite whose check ids are
// want: every FAILURE (listed or not), every id of want that did not run or did not succeed,
// and a count of passed checks other than len(want). An empty list is a pass.
func (r Result) Problems(want []string) []string {
	var out []string
	for _, c := range r.Failures() {
		out = append(out, fmt.Sprintf("check %s/%s failed: %s", c.Scenario, c.ID, c.ErrorMessage))
	}
	statuses := r.Statuses()
	for _, id := range want {
		switch st, ran := statuses[id]; {
		case !ran:
			out = append(out, fmt.Sprintf("check %s did not run", id))
		case st != StatusSuccess && st != StatusFailure:
			out = append(out, fmt.Sprintf("check %s: %s", id, st))
		}
	}
	passed := 0
	for _, c := range r.Checks {
		if c.Status == StatusSuccess {
			passed++
		}
	}
	if passed != len(want) {
		out = append(out, fmt.Sprintf("%d of %d checks passed, want %d of %d", passed, len(r.Checks), len(want), len(want)))
	}
	return out
}

// Summary renders the non-successful checks, one per line, for a test failure message.
func (r Result) Summary() string {
	var b strings.Builder
	for _, c := range r.Checks {
		if c.Status == StatusSuccess {
			continue
		}
		fmt.Fprintf(&b, "%s/%s: %s", c.Scenario, c.ID, c.Status)
		if c.ErrorMessage != "" {
			fmt.Fprintf(&b, ": %s", c.ErrorMessage)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// maxSuiteOutput bounds the suite's captured stdout and stderr.
const maxSuiteOutput = 4 << 20

// RunConformance runs the server scenarios of @modelcontextprotocol/conformance (the active
// suite unless extra flags say otherwise, e.g. "--scenario", "ping") with Node 22 against url,
// an MCP Streamable HTTP endpoint, and returns every check's outcome, parsed from the
// checks.json files the suite writes with --output-dir.
//
// Failed checks are reported in the Result, not as an error: the error means the suite could
// not run or report (ctx ended, Node missing, no results). The dns-rebinding-protection
// scenario requires url's host to be localhost, 127.0.0.1 or [::1].
func RunConformance(t testing.TB, ctx context.Context, url string, extra ...string) (Result, error) {
	t.Helper()
	node := Node22(t)
	dir := PeerDir(t)
	outDir := t.TempDir()
	args := append([]string{
		filepath.Join(dir, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js"),
		"server", "--url", url, "--output-dir", outDir,
	}, extra...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	stdout := NewCappedBuffer(maxSuiteOutput)
	stderr := NewCappedBuffer(maxSuiteOutput)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	runErr := cmd.Run()
	res := Result{Duration: time.Since(start), Output: stdout.String() + stderr.String()}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("conformance suite: %w", err)
	}
	checks, err := readChecks(outDir, stdout.String())
	if err != nil {
		return res, fmt.Errorf("conformance suite (exit: %v): %w\n%s", runErr, err, res.Output)
	}
	res.Checks = checks
	// Exit status 1 only means some check failed; those are in the result.
	var exitErr *exec.ExitError
	if runErr != nil && !(errors.As(runErr, &exitErr) && exitErr.ExitCode() == 1 && len(res.Failures()) > 0) {
		return res, fmt.Errorf("conformance suite: %w\n%s", runErr, res.Output)
	}
	return res, nil
}

// scenarioDir matches a result directory: server-<scenario>-<ISO timestamp with : and . as ->.
var scenarioDir = regexp.MustCompile(`^server-(.+)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z)$`)

// scenarioStarted matches the line the suite prints as each scenario starts.
var scenarioStarted = regexp.MustCompile(`^Running client scenario '([^']+)' against server: `)

// readChecks reads every checks.json the suite wrote to outDir, in run order. A scenario the
// suite started (per its stdout) without writing results crashed; it is reported as one
// FAILURE check named after the scenario, as the suite's own summary does.
func readChecks(outDir, stdout string) ([]Check, error) {
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	type scenarioResult struct {
		scenario, stamp string
		checks          []Check
	}
	var results []scenarioResult
	seen := make(map[string]bool)
	for _, e := range entries {
		m := scenarioDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		scenario := m[1]
		b, err := os.ReadFile(filepath.Join(outDir, e.Name(), "checks.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // started but crashed: reported below
		}
		if err != nil {
			return nil, fmt.Errorf("read %s results: %w", scenario, err)
		}
		var checks []Check
		if err := json.Unmarshal(b, &checks); err != nil {
			return nil, fmt.Errorf("decode %s results: %w", scenario, err)
		}
		for i := range checks {
			checks[i].Scenario = scenario
		}
		results = append(results, scenarioResult{scenario: scenario, stamp: m[2], checks: checks})
		seen[scenario] = true
	}
	sort.SliceStable(results, func(i, j int) bool {
		if results[i].stamp != results[j].stamp {
			return results[i].stamp < results[j].stamp
		}
		return results[i].scenario < results[j].scenario
	})
	var out []Check
	for _, r := range results {
		out = append(out, r.checks...)
	}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(make([]byte, 64<<10), maxSuiteOutput)
	for sc.Scan() {
		m := scenarioStarted.FindStringSubmatch(sc.Text())
		if m == nil || seen[m[1]] {
			continue
		}
		seen[m[1]] = true
		out = append(out, Check{
			Scenario:     m[1],
			ID:           m[1],
			Name:         m[1],
			Description:  "Failed to run scenario",
			Status:       StatusFailure,
			ErrorMessage: "the scenario wrote no results (see the suite output)",
		})
	}
	if len(out) == 0 {
		return nil, errors.New("no check results")
	}
	return out, nil
}
