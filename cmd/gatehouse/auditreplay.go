package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// maxReplayCalls bounds the calls one replay holds: a longer stretch is replayed in parts
// (--since, --until).
const maxReplayCalls = 200000

// replayedCall is one call of a timeline: its records joined by call_id.
type replayedCall struct {
	CallID        string        `json:"call_id,omitempty"`
	Sequence      uint64        `json:"sequence"` // of the call's first record
	Time          time.Time     `json:"time"`
	SessionID     string        `json:"session_id,omitempty"`
	Principal     string        `json:"principal,omitempty"`
	Tenant        string        `json:"tenant,omitempty"`
	Server        string        `json:"server"`
	Method        string        `json:"method"`
	Tool          string        `json:"tool,omitempty"`
	TraceID       string        `json:"trace_id,omitempty"`
	Decision      string        `json:"decision"` // allow, deny, or "-" when policy did not decide
	PolicyIDs     []string      `json:"policy_ids"`
	BundleVersion string        `json:"bundle_version,omitempty"`
	Outcome       string        `json:"outcome"` // pending while only the decision is recorded
	Latency       time.Duration `json:"latency_ns"`
	Error         string        `json:"error,omitempty"`

	decided *auditv1.Record // the record that carries the decision and its input
}

// timeline joins the records of a walk into calls, in the order of each call's first record.
type timeline struct {
	calls []*replayedCall
	byID  map[string]*replayedCall
}

func (t *timeline) add(e *auditv1.Entry) error {
	r := e.GetRecord()
	c := t.byID[r.GetCallId()]
	if c == nil || r.GetCallId() == "" {
		if len(t.calls) >= maxReplayCalls {
			return fmt.Errorf("more than %d calls: replay a shorter stretch (--since, --until)", maxReplayCalls)
		}
		c = &replayedCall{CallID: r.GetCallId(), Sequence: e.GetSequence(), Time: r.GetTime().AsTime(), SessionID: r.GetSessionId(),
			Principal: r.GetPrincipal(), Tenant: r.GetTenant(), Server: r.GetServer(), Method: r.GetMethod(), Tool: r.GetTool(),
			TraceID: r.GetTraceId(), Decision: "-", PolicyIDs: []string{}, Outcome: "pending"}
		t.calls = append(t.calls, c)
		if r.GetCallId() != "" {
			if t.byID == nil {
				t.byID = make(map[string]*replayedCall)
			}
			t.byID[r.GetCallId()] = c
		}
	}
	switch r.GetPhase() {
	case auditv1.Phase_PHASE_DECISION:
		c.take(r)
		c.Decision = "allow" // only an allowed call is written ahead
	default: // the outcome, or the whole call in one record
		if r.GetPhase() != auditv1.Phase_PHASE_OUTCOME || c.decided == nil {
			c.take(r)
		}
		c.Outcome = enumName(r.GetOutcome().String(), "OUTCOME_")
		c.Error = r.GetError()
		if r.GetLatency() != nil {
			c.Latency = r.GetLatency().AsDuration()
		}
		if c.Decision == "-" && r.GetOutcome() == auditv1.Outcome_OUTCOME_DENIED && r.GetBundleVersion() != "" {
			c.Decision = "deny" // a record from before the decision was kept
		}
	}
	return nil
}

// take notes the decision a record carries.
func (c *replayedCall) take(r *auditv1.Record) {
	if r.GetBundleVersion() == "" && r.GetDecision() == auditv1.PolicyDecision_POLICY_DECISION_UNSPECIFIED {
		return
	}
	c.decided = r
	c.BundleVersion = r.GetBundleVersion()
	c.PolicyIDs = append([]string{}, r.GetPolicyIds()...)
	if d := enumName(r.GetDecision().String(), "POLICY_DECISION_"); d != "-" {
		c.Decision = d
	}
}

func auditReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit replay", "audit replay [--json] SESSION | audit replay --policy DIR [--json] [--config FILE] (SESSION | --since T [--until T])", stderr)
	var f auditFlags
	f.register(fs, false)
	policyDir := fs.String("policy", "", "a candidate policy directory: print the recorded calls it would decide differently")
	configFile := fs.String("config", "", "with --policy and --data-dir: the config file whose servers (and tenants) the calls are decided against (default: the embedded one)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		fs.Usage()
		return fmt.Errorf("audit replay: more than one session: %q", pos)
	}
	if len(pos) == 1 {
		f.session = pos[0]
	}
	if f.session == "" && (*policyDir == "" || f.since == "") {
		fs.Usage()
		if *policyDir == "" {
			return errors.New("audit replay: name a session")
		}
		return errors.New("audit replay --policy: name a session, or a time range (--since)")
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return fmt.Errorf("audit replay: %w", err)
	}
	log, err := openAuditLog("audit replay", &f, getenv)
	if err != nil {
		return err
	}
	var shadow *shadowJudge
	if *policyDir != "" {
		if shadow, err = newShadowJudge(ctx, *policyDir, *configFile, &f, getenv, stderr); err != nil {
			return err
		}
	}
	var t timeline
	if err := eachEntry(ctx, log, filter, t.add); err != nil {
		return err
	}
	if shadow != nil {
		return shadow.report(stdout, t.calls, f.json)
	}
	if len(t.calls) == 0 {
		return fmt.Errorf("audit replay: no records of session %q", f.session)
	}
	return printTimeline(stdout, t.calls, f.json)
}

func printTimeline(w io.Writer, calls []*replayedCall, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, c := range calls {
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMETHOD\tSERVER\tTOOL\tDECISION\tPOLICIES\tBUNDLE\tOUTCOME\tLATENCY\tERROR")
	for _, c := range calls {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Time.Format(time.RFC3339Nano), c.Method, c.Server, orDash(c.Tool),
			c.Decision, policyList(c.PolicyIDs), shortVersion(c.BundleVersion), c.Outcome, c.Latency, oneLine(c.Error))
	}
	return tw.Flush()
}

func policyList(ids []string) string {
	if len(ids) == 0 {
		return "-"
	}
	return strings.Join(ids, ",")
}

// shortVersion keeps a table narrow: sha256: and 12 hex digits identify a bundle well enough
// to a reader (--json has it whole).
func shortVersion(v string) string {
	if rest, ok := strings.CutPrefix(v, "sha256:"); ok && len(rest) > 12 {
		return "sha256:" + rest[:12]
	}
	return orDash(v)
}
