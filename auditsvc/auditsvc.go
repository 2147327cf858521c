// Package auditsvc is Gatehouse's append-only audit log: hash chained, committed in groups
// with fsync. A call the upstream may see is written ahead: its decision record is durable
// before the upstream sees the call, and its outcome record follows, deferred (queued for the
// next group commit without holding the host's answer) or durable (strict mode). At start, a
// decision left without an outcome by a crash is given one: OUTCOME_UNKNOWN. It keeps one file
// today (<dir>/audit.log, JSON lines); Verify checks a log's chain.
package auditsvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FileName is the log's name inside Config.Dir.
const FileName = "audit.log"

// Limits on a record: every field comes from another service, but is still bounded. A field
// over its bound refuses the record (InvalidArgument), except the error text, which is free
// text from upstreams: invalid UTF-8 in it is replaced, and it is cut at maxErrorBytes with a
// marker giving its whole length (trimError).
const (
	maxRequestBytes = 256 << 10
	maxRecordBytes  = 64 << 10 // the record's JSON, as stored
	maxIDBytes      = 512      // trace, session, principal, tenant, server, method, digests, version
	maxCallIDBytes  = 128
	maxToolBytes    = 4096 // a tool name or resource URI
	maxErrorBytes   = 8192
	maxPolicyIDs    = 64
	maxMaxBatch     = 1 << 16
)

// Defaults and bounds of the queue of records not yet durable.
const (
	defaultMaxBatch      = 256
	defaultQueueBatches  = 4 // MaxQueue's default, in batches
	defaultMaxQueueBytes = 16 << 20
	maxMaxQueue          = 1 << 20
	defaultCommitDelay   = 2 * time.Millisecond
	maxCommitDelay       = 100 * time.Millisecond
)

// maxOpenCalls bounds the decisions without an outcome that recovery tracks while it scans
// the log at start (a map entry each, about 100 bytes). A healthy log has as many as there
// were calls in flight when the gateway stopped.
const maxOpenCalls = 1 << 18

// limits are the log's bounds, resolved from Config.
type limits struct {
	maxBatch, maxQueue, maxQueueBytes, maxOpenCalls int
	commitDelay                                     time.Duration
	now                                             func() time.Time
}

// Config is the audit service's configuration.
type Config struct {
	// Listen is the address the standalone binary serves on.
	Listen string
	// Dir holds the log file; it is created if missing.
	Dir string
	// MaxBatch is the most records committed by one write and fsync.
	MaxBatch int
	// MaxQueue bounds the records not yet durable (queued or being committed); an append
	// that finds it full waits for room. Default 4 × MaxBatch; at least MaxBatch.
	MaxQueue int
	// MaxQueueBytes bounds their bytes likewise. Default 16 MiB; at least 64 KiB (one
	// record).
	MaxQueueBytes int
	// CommitDelay is how long deferred records wait, when nothing else is queued, for a
	// durable append to share their fsync: the outcome of one call rides with the decision of
	// the next. It adds to their commit lag. Default (0) 2ms; negative: commit at once; at
	// most 100ms.
	CommitDelay time.Duration
}

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_AUDIT_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7105", "address to serve on")
	fs.StringVar(&c.Dir, "dir", "./data/audit", "directory of the audit log")
	fs.IntVar(&c.MaxBatch, "max-batch", defaultMaxBatch, "most records committed by one write and fsync")
	fs.IntVar(&c.MaxQueue, "max-queue", 0, "most records not yet durable; appends wait for room beyond (0: 4 × max-batch)")
	fs.IntVar(&c.MaxQueueBytes, "max-queue-bytes", 0, "most bytes of records not yet durable (0: 16 MiB)")
	fs.DurationVar(&c.CommitDelay, "commit-delay", 0, "how long deferred records wait for a durable append to share their fsync (0: 2ms; negative: none)")
}

// Service appends records to the log.
type Service struct {
	log     *chainLog
	logger  *slog.Logger
	now     func() time.Time
	metrics *telemetry.AuditMetrics // nil: metrics off (metrics.go)
}

// New opens or creates <cfg.Dir>/audit.log and recovers it: it verifies the whole chain
// (a break fails New with a *ChainError naming the sequence), cuts away a torn last line
// with a warning, appends durably an OUTCOME_UNKNOWN record (error "gateway stopped before
// the outcome was recorded") for every decision record without an outcome, and continues the
// chain from the last record. If those records cannot be written, New fails.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Service, error) {
	if cfg.Dir == "" {
		return nil, errors.New("auditsvc: a directory is required")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = defaultMaxBatch
	}
	if cfg.MaxBatch > maxMaxBatch {
		return nil, fmt.Errorf("auditsvc: max batch %d is above %d", cfg.MaxBatch, maxMaxBatch)
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = defaultQueueBatches * cfg.MaxBatch
	}
	if cfg.MaxQueue < cfg.MaxBatch || cfg.MaxQueue > maxMaxQueue {
		return nil, fmt.Errorf("auditsvc: max queue %d is not between max batch %d and %d", cfg.MaxQueue, cfg.MaxBatch, maxMaxQueue)
	}
	if cfg.MaxQueueBytes == 0 {
		cfg.MaxQueueBytes = defaultMaxQueueBytes
	}
	switch {
	case cfg.CommitDelay == 0:
		cfg.CommitDelay = defaultCommitDelay
	case cfg.CommitDelay < 0:
		cfg.CommitDelay = 0
	case cfg.CommitDelay > maxCommitDelay:
		return nil, fmt.Errorf("auditsvc: commit delay %v is above %v", cfg.CommitDelay, maxCommitDelay)
	}
	if cfg.MaxQueueBytes < maxRecordBytes {
		return nil, fmt.Errorf("auditsvc: max queue bytes %d is below one record's bound, %d", cfg.MaxQueueBytes, maxRecordBytes)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("auditsvc: create dir: %w", err)
	}
	path := filepath.Join(cfg.Dir, FileName)
	l, err := openLog(path, limits{
		maxBatch:      cfg.MaxBatch,
		maxQueue:      cfg.MaxQueue,
		maxQueueBytes: cfg.MaxQueueBytes,
		maxOpenCalls:  maxOpenCalls,
		commitDelay:   cfg.CommitDelay,
		now:           time.Now,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("auditsvc: %w", err)
	}
	l.start()
	logger.Info("audit log open", "path", path, "records", l.seq, "max_batch", cfg.MaxBatch,
		"max_queue", cfg.MaxQueue, "max_queue_bytes", cfg.MaxQueueBytes, "commit_delay", cfg.CommitDelay)
	s := &Service{log: l, logger: logger, now: time.Now}
	for _, o := range opts {
		if err := o(s); err != nil {
			_ = l.close(context.Background())
			return nil, err
		}
	}
	return s, nil
}

// Path is the log file's path.
func (s *Service) Path() string { return s.log.path }

// Handlers returns the AuditService handler to mount.
func (s *Service) Handlers() []rpcserver.Handler {
	path, h := auditv1connect.NewAuditServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	return []rpcserver.Handler{{Service: auditv1connect.AuditServiceName, Path: path, Handler: h}}
}

// Close stops accepting records, commits those already queued (deferred ones included), and
// closes the log.
func (s *Service) Close(ctx context.Context) error { return s.log.close(ctx) }

// Append implements auditv1connect.AuditServiceHandler. It validates the record (see
// validateRecord), then:
//   - not deferred: returns once the record is durable, with its sequence and chain hash;
//   - deferred: returns once the record is queued for the next group commit (sequence 0, no
//     hash). The record is committed with the next durable append, or CommitDelay after it
//     was queued if none comes first: it is durable within CommitDelay plus two commits (the
//     one in progress and its own). If that commit fails, the record is lost: counted in
//     Stats.LostDeferred and logged at ERROR with its call id.
//
// Either waits for room while the queue of records not yet durable is full (backpressure),
// until ctx ends. Errors: InvalidArgument for a record refused as it stands (nothing is
// written); Unavailable when it cannot be made durable (disk full, failed write or fsync,
// closing: it is not in the log); Canceled or DeadlineExceeded when ctx ended first (for a
// durable append the record may still be committed).
func (s *Service) Append(ctx context.Context, req *connect.Request[auditv1.AppendRequest]) (_ *connect.Response[auditv1.AppendResponse], err error) {
	start := time.Now()
	defer func() { s.metrics.Append(req.Msg.GetDeferred(), time.Since(start), err != nil) }()
	rec := req.Msg.GetRecord()
	if err := validateRecord(rec); err != nil {
		return nil, toConnect(err)
	}
	if rec.GetTime() == nil || needsTrim(rec.GetError()) {
		rec = proto.CloneOf(rec) // the caller's message is not changed
		if rec.Time == nil {
			rec.Time = timestamppb.New(s.now())
		}
		rec.Error = trimError(rec.Error)
	}
	b, err := marshalRecord(rec)
	if err != nil {
		return nil, toConnect(err)
	}
	seq, hash, err := s.log.append(ctx, b, rec.GetCallId(), req.Msg.GetDeferred())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&auditv1.AppendResponse{Sequence: seq, Hash: hash}), nil
}

// Sync returns once every record appended before it (deferred ones included) is durable. It
// fails with Unavailable if the log cannot say so: the commit failed, the log is broken, or a
// deferred record has been lost since the log was opened (Stats.LostDeferred).
func (s *Service) Sync(ctx context.Context) error {
	if err := s.log.sync(ctx); err != nil {
		return toConnect(err)
	}
	return nil
}

// Stats are the log's counters.
type Stats struct {
	// LostDeferred counts deferred records whose commit failed after their append had
	// returned: each is also logged at ERROR with its call id.
	LostDeferred uint64
	// Commits counts the batches made durable (one write and one fsync each).
	Commits uint64
	// Queued and QueuedBytes are the records not yet durable (queued or being committed).
	Queued, QueuedBytes int
}

// Stats returns the log's counters now.
func (s *Service) Stats() Stats {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	return Stats{
		LostDeferred: s.log.lostDeferred.Load(),
		Commits:      s.log.commits.Load(),
		Queued:       s.log.queued,
		QueuedBytes:  s.log.queuedBytes,
	}
}

// FailWrites makes every later write of the log fail with err, as a full disk does (pass an
// error wrapping syscall.ENOSPC), until it is called with nil. It is the fault hook for tests
// that cannot fill a real disk. Nothing is written while it lasts, so the log stays usable.
func (s *Service) FailWrites(err error) {
	if err == nil {
		s.log.writeFault.Store(nil)
		return
	}
	s.log.writeFault.Store(&err)
}

// validateRecord checks what every record must have, by phase, and bounds every field:
//   - PHASE_DECISION: a call_id, no outcome and no result_digest;
//   - PHASE_OUTCOME: a call_id and an outcome: ALLOWED, DENIED, FAILED or TIMED_OUT;
//   - PHASE_COMPLETE (or UNSPECIFIED, read as complete): an outcome, as for PHASE_OUTCOME.
//
// Every record needs a server and a method. OUTCOME_UNKNOWN is written by recovery only.
// Strings must be UTF-8 (the error text is repaired instead) and within their bounds (the
// error text is cut instead, see trimError).
func validateRecord(rec *auditv1.Record) error {
	if rec == nil {
		return invalid("record is required")
	}
	outcome := rec.GetOutcome()
	switch rec.GetPhase() {
	case auditv1.Phase_PHASE_DECISION:
		if rec.GetCallId() == "" {
			return invalid("a decision record needs a call_id")
		}
		if outcome != auditv1.Outcome_OUTCOME_UNSPECIFIED {
			return invalid("a decision record has no outcome (got %s); its outcome record follows", outcome)
		}
		if rec.GetResultDigest() != "" {
			return invalid("a decision record has no result_digest")
		}
	case auditv1.Phase_PHASE_OUTCOME:
		if rec.GetCallId() == "" {
			return invalid("an outcome record needs the call_id of its decision")
		}
		if err := validateOutcome(outcome); err != nil {
			return err
		}
	case auditv1.Phase_PHASE_UNSPECIFIED, auditv1.Phase_PHASE_COMPLETE:
		if err := validateOutcome(outcome); err != nil {
			return err
		}
	default:
		return invalid("unknown phase %d", rec.GetPhase())
	}
	if rec.GetServer() == "" {
		return invalid("server is required")
	}
	if rec.GetMethod() == "" {
		return invalid("method is required")
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"trace_id", rec.GetTraceId(), maxIDBytes},
		{"session_id", rec.GetSessionId(), maxIDBytes},
		{"principal", rec.GetPrincipal(), maxIDBytes},
		{"tenant", rec.GetTenant(), maxIDBytes},
		{"server", rec.GetServer(), maxIDBytes},
		{"method", rec.GetMethod(), maxIDBytes},
		{"tool", rec.GetTool(), maxToolBytes},
		{"arguments_digest", rec.GetArgumentsDigest(), maxIDBytes},
		{"bundle_version", rec.GetBundleVersion(), maxIDBytes},
		{"call_id", rec.GetCallId(), maxCallIDBytes},
		{"result_digest", rec.GetResultDigest(), maxIDBytes},
	} {
		if len(f.value) > f.max {
			return invalid("%s is longer than %d bytes", f.name, f.max)
		}
		if !utf8.ValidString(f.value) {
			return invalid("%s is not UTF-8", f.name)
		}
	}
	if len(rec.GetPolicyIds()) > maxPolicyIDs {
		return invalid("more than %d policy ids", maxPolicyIDs)
	}
	for _, id := range rec.GetPolicyIds() {
		if len(id) > maxIDBytes {
			return invalid("a policy id is longer than %d bytes", maxIDBytes)
		}
		if !utf8.ValidString(id) {
			return invalid("a policy id is not UTF-8")
		}
	}
	if t := rec.GetTime(); t != nil {
		if err := t.CheckValid(); err != nil {
			return invalid("time: %v", err)
		}
	}
	if d := rec.GetLatency(); d != nil {
		if err := d.CheckValid(); err != nil {
			return invalid("latency: %v", err)
		}
		if d.AsDuration() < 0 {
			return invalid("latency is negative")
		}
	}
	return nil
}

// validateOutcome checks the outcome of an outcome or complete record.
func validateOutcome(o auditv1.Outcome) error {
	switch o {
	case auditv1.Outcome_OUTCOME_ALLOWED, auditv1.Outcome_OUTCOME_DENIED, auditv1.Outcome_OUTCOME_FAILED, auditv1.Outcome_OUTCOME_TIMED_OUT:
		return nil
	case auditv1.Outcome_OUTCOME_UNSPECIFIED:
		return invalid("outcome is required")
	case auditv1.Outcome_OUTCOME_UNKNOWN:
		return invalid("outcome unknown is written by recovery only")
	default:
		return invalid("unknown outcome %d", o)
	}
}

// needsTrim reports whether trimError would change s.
func needsTrim(s string) bool { return len(s) > maxErrorBytes || !utf8.ValidString(s) }

// trimError makes an error text storable: invalid UTF-8 becomes U+FFFD, and a text longer
// than maxErrorBytes is cut at a character boundary and ends with a marker giving its whole
// length, the whole within maxErrorBytes.
func trimError(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxErrorBytes {
		return s
	}
	marker := fmt.Sprintf(" …[truncated: %d bytes in all]", len(s))
	keep := maxErrorBytes - len(marker)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + marker
}
