package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// errEnough stops a walk of the log once --limit records are printed.
var errEnough = errors.New("enough")

func auditQuery(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit query", "audit query [FILTERS] [--limit N] [--json]", stderr)
	var f auditFlags
	f.register(fs, true)
	limit := fs.Int("limit", 0, "print at most N records (0: every one)")
	if pos, err := parseArgs(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		fs.Usage()
		return fmt.Errorf("audit query: unexpected arguments %q", pos)
	}
	filter, err := f.filter(time.Now())
	if err != nil {
		return fmt.Errorf("audit query: %w", err)
	}
	log, err := openAuditLog("audit query", &f, getenv)
	if err != nil {
		return err
	}
	p := newEntryPrinter(stdout, f.json)
	n := 0
	err = eachEntry(ctx, log, filter, func(e *auditv1.Entry) error {
		if *limit > 0 && n >= *limit {
			return errEnough
		}
		n++
		return p.print(e)
	})
	if err != nil && !errors.Is(err, errEnough) {
		return err
	}
	return p.flush()
}

// entryPrinter prints records as a table (aligned when flushed) or as JSON lines.
type entryPrinter struct {
	w    io.Writer
	tw   *tabwriter.Writer
	json bool
}

func newEntryPrinter(w io.Writer, json bool) *entryPrinter {
	p := &entryPrinter{w: w, json: json}
	if !json {
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(p.tw, "SEQ\tTIME\tSESSION\tPRINCIPAL\tTENANT\tSERVER\tMETHOD\tTOOL\tPHASE\tDECISION\tOUTCOME\tLATENCY\tERROR")
	}
	return p
}

var entryJSON = protojson.MarshalOptions{UseProtoNames: true}

func (p *entryPrinter) print(e *auditv1.Entry) error {
	if p.json {
		b, err := entryJSON.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	r := e.GetRecord()
	_, err := fmt.Fprintf(p.tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetSequence(), r.GetTime().AsTime().Format(time.RFC3339Nano),
		orDash(r.GetSessionId()), orDash(r.GetPrincipal()), orDash(r.GetTenant()), r.GetServer(), r.GetMethod(), orDash(r.GetTool()),
		enumName(r.GetPhase().String(), "PHASE_"), enumName(r.GetDecision().String(), "POLICY_DECISION_"),
		enumName(r.GetOutcome().String(), "OUTCOME_"), latency(r), oneLine(r.GetError()))
	return err
}

// flush writes the table; the JSON lines are written as they come.
func (p *entryPrinter) flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

// enumName is an enum value's name without its prefix, lower case; "-" for unspecified.
func enumName(name, prefix string) string {
	n := strings.ToLower(strings.TrimPrefix(name, prefix))
	if n == "unspecified" {
		return "-"
	}
	return n
}

func latency(r *auditv1.Record) string {
	if r.GetLatency() == nil {
		return "-"
	}
	return r.GetLatency().AsDuration().String()
}

// oneLine keeps a table row on one line: an error text from an upstream may hold newlines
// and tabs.
func oneLine(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
