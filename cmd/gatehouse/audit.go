package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// `gatehouse audit`: the audit log read through auditsvc's Query and Tail at the gateway's
// URL with the operator's own credential (as `gatehouse token`), or offline from a data
// directory's files (--data-dir), which needs no gateway running.

const auditUsage = `usage: gatehouse audit <command> [flags]

commands:
  query [FILTERS] [--limit N] [--json]
                      the records that match, in log order, as a table or JSON lines
  tail [FILTERS] [--from SEQ] [--json]
                      the records as they are committed (from now, or from sequence SEQ)
  replay [--json] SESSION
                      the session's timeline: every call, its decision, deciding policies,
                      bundle version, outcome and latency
  replay --policy DIR [--json] [--config FILE] (SESSION | --since T [--until T])
                      re-decide the recorded calls against the bundle in DIR and print every
                      call it would decide differently, old and new deciding policies
  ` + auditVerifySynopsis + `

FILTERS: --session --principal --tenant --server --tool --outcome (allowed, denied, failed,
timed_out, unknown) --trace --call --since --until (RFC 3339, or a duration back from now:
--since 168h).

Every command reads the gateway at --url (default $` + gatewayURLEnv + ` or ` + defaultURL + `) with the
operator's credential from ` + adminTokenEnv + ` or ` + adminTokenEnv + `_FILE (Cedar decides admin/audit.read,
and admin/audit.verify for verify),
or, with --data-dir DIR, the log in DIR/audit directly (the data dir of gatehouse up).`

// auditTimeout bounds each Query RPC of the command.
const auditTimeout = 60 * time.Second

func auditCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, auditUsage)
		return errors.New("audit: no command (query, tail, replay or verify)")
	}
	switch args[0] {
	case "query":
		return auditQuery(ctx, args[1:], getenv, stdout, stderr)
	case "tail":
		return auditTail(ctx, args[1:], getenv, stdout, stderr)
	case "replay":
		return auditReplay(ctx, args[1:], getenv, stdout, stderr)
	case "verify":
		err := auditVerify(ctx, args[1:], getenv, stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, auditUsage)
		return nil
	}
	fmt.Fprintln(stderr, auditUsage)
	return fmt.Errorf("audit: unknown command %q", args[0])
}

// auditFlags are the flags every audit command takes: where the log is, and a filter.
type auditFlags struct {
	url, dataDir                                                   string
	session, principal, tenant, server, tool, outcome, trace, call string
	since, until                                                   string
	json                                                           bool
}

func (f *auditFlags) register(fs *flag.FlagSet, withSession bool) {
	fs.StringVar(&f.url, "url", "", "the gateway (default $"+gatewayURLEnv+" or "+defaultURL+")")
	fs.StringVar(&f.dataDir, "data-dir", "", "read the log in DIR/audit directly instead of asking the gateway")
	if withSession {
		fs.StringVar(&f.session, "session", "", "only this session's records")
	}
	fs.StringVar(&f.principal, "principal", "", "only this principal's records")
	fs.StringVar(&f.tenant, "tenant", "", "only this tenant's records")
	fs.StringVar(&f.server, "server", "", "only this server's records")
	fs.StringVar(&f.tool, "tool", "", "only records of this tool, resource URI or prompt")
	fs.StringVar(&f.outcome, "outcome", "", "only records with this outcome: allowed, denied, failed, timed_out or unknown")
	fs.StringVar(&f.trace, "trace", "", "only records of this trace id")
	fs.StringVar(&f.call, "call", "", "only records of this call id")
	fs.StringVar(&f.since, "since", "", "only records at or after: RFC 3339, or a duration back from now (24h)")
	fs.StringVar(&f.until, "until", "", "only records before: RFC 3339, or a duration back from now")
	fs.BoolVar(&f.json, "json", false, "JSON lines instead of a table")
}

// filter is the flags' filter, at now.
func (f *auditFlags) filter(now time.Time) (*auditv1.Filter, error) {
	out := &auditv1.Filter{SessionId: f.session, Principal: f.principal, Tenant: f.tenant, Server: f.server,
		Tool: f.tool, TraceId: f.trace, CallId: f.call}
	if f.outcome != "" {
		v, ok := auditv1.Outcome_value["OUTCOME_"+strings.ToUpper(f.outcome)]
		if !ok || v == 0 {
			return nil, fmt.Errorf("--outcome %q: want allowed, denied, failed, timed_out or unknown", f.outcome)
		}
		out.Outcome = auditv1.Outcome(v)
	}
	for _, t := range []struct {
		name, value string
		dst         **timestamppb.Timestamp
	}{{"since", f.since, &out.Since}, {"until", f.until, &out.Until}} {
		if t.value == "" {
			continue
		}
		at, err := parseWhen(t.value, now)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", t.name, err)
		}
		*t.dst = timestamppb.New(at)
	}
	return out, nil
}

// parseWhen reads a time: RFC 3339, or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration back from now (24h)", s)
	}
	return now.Add(-d), nil
}

// auditLog is where the command reads: auditsvc at the gateway, or the files of a data dir.
type auditLog interface {
	query(ctx context.Context, req *auditv1.QueryRequest) (*auditv1.QueryResponse, error)
	tail(ctx context.Context, req *auditv1.TailRequest, send func([]*auditv1.Entry) error) error
}

// openAuditLog is the log the flags name; what names the command in errors.
func openAuditLog(what string, f *auditFlags, getenv func(string) string) (auditLog, error) {
	if f.dataDir != "" {
		if f.url != "" {
			return nil, fmt.Errorf("%s: give --url or --data-dir, not both", what)
		}
		return offlineLog{engine: query.NewEngine(query.NewReader(auditsvc.SegmentFiles(filepath.Join(f.dataDir, "audit")), nil))}, nil
	}
	// No client timeout: a tail lasts as long as the operator wants; each Query has its own.
	base, hc, err := adminClient(what, f.url, getenv, 0)
	if err != nil {
		return nil, err
	}
	return onlineLog{what: what, url: f.url, client: auditv1connect.NewAuditServiceClient(hc, base)}, nil
}

// onlineLog reads through auditsvc's RPCs.
type onlineLog struct {
	what, url string
	client    auditv1connect.AuditServiceClient
}

func (o onlineLog) query(ctx context.Context, req *auditv1.QueryRequest) (*auditv1.QueryResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, auditTimeout)
	defer cancel()
	resp, err := o.client.Query(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, o.fail(err)
	}
	return resp.Msg, nil
}

func (o onlineLog) tail(ctx context.Context, req *auditv1.TailRequest, send func([]*auditv1.Entry) error) error {
	stream, err := o.client.Tail(ctx, connect.NewRequest(req))
	if err != nil {
		return o.fail(err)
	}
	defer stream.Close()
	for stream.Receive() {
		if err := send(stream.Msg().GetEntries()); err != nil {
			return err
		}
	}
	if err := stream.Err(); err != nil && ctx.Err() == nil {
		return o.fail(err)
	}
	return nil
}

// fail makes an RPC's failure one clear line.
func (o onlineLog) fail(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("%s: %w", o.what, err)
	}
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		return fmt.Errorf("%s: the gateway refused the admin credential (%s): %s", o.what, adminTokenEnv, ce.Message())
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return fmt.Errorf("%s: cannot reach the audit log at %s: %s", o.what, cmpStr(o.url, defaultURL), ce.Message())
	}
	return fmt.Errorf("%s: %s", o.what, ce.Message())
}

// offlineLog reads a data dir's files.
type offlineLog struct{ engine *query.Engine }

func (o offlineLog) query(ctx context.Context, req *auditv1.QueryRequest) (*auditv1.QueryResponse, error) {
	return o.engine.Query(ctx, req)
}

// offlinePoll is how often an offline tail looks for new lines: nothing tells it of a commit.
const offlinePoll = 250 * time.Millisecond

func (o offlineLog) tail(ctx context.Context, req *auditv1.TailRequest, send func([]*auditv1.Entry) error) error {
	pos := query.Position{Seq: req.GetFromSequence()}
	if pos.Seq == 0 {
		end, err := o.lastSeq(ctx)
		if err != nil {
			return err
		}
		pos.Seq = end + 1
	}
	tick := time.NewTicker(offlinePoll)
	defer tick.Stop()
	wake := func() <-chan struct{} {
		ch := make(chan struct{})
		go func() {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
			close(ch)
		}()
		return ch
	}
	err := o.engine.Follow(ctx, req.GetFilter(), pos, wake, send)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// lastSeq is the last sequence in the files now.
func (o offlineLog) lastSeq(ctx context.Context) (uint64, error) {
	var last uint64
	req := &auditv1.QueryRequest{PageSize: query.MaxPageSize}
	for {
		resp, err := o.engine.Query(ctx, req)
		if err != nil {
			return 0, err
		}
		if n := len(resp.GetEntries()); n > 0 {
			last = resp.GetEntries()[n-1].GetSequence()
		}
		if resp.GetNextPageToken() == "" {
			return last, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// eachEntry calls fn with every record that matches filter, page after page, in order.
func eachEntry(ctx context.Context, log auditLog, filter *auditv1.Filter, fn func(*auditv1.Entry) error) error {
	req := &auditv1.QueryRequest{Filter: filter, PageSize: query.MaxPageSize}
	for {
		resp, err := log.query(ctx, req)
		if err != nil {
			return err
		}
		for _, e := range resp.GetEntries() {
			if err := fn(e); err != nil {
				return err
			}
		}
		if resp.GetNextPageToken() == "" {
			return nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}
