// Package auditsvc is Gatehouse's append-only audit log: hash chained, committed in groups
// with fsync. A call the upstream may see is written ahead: its decision record is durable
// before the upstream sees the call, and its outcome record follows, deferred (queued for the
// next group commit without holding the host's answer) or durable (strict mode). At start, a
// decision left without an outcome by a crash is given one: OUTCOME_UNKNOWN. It keeps one file
// today (<dir>/audit.log, JSON lines); Verify checks a log's chain.
package auditsvc

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/alerts"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FileName is the log's first segment inside Config.Dir (the one file of logs written before
// segments); later segments are audit-00000001.log, …
const FileName = "audit.log"

// Limits on a record: every field comes from another service, but is still bounded. Most of
// it is text a host or an upstream chose (trace id, method, tool, error, arguments) or that
// passed through several services (principal, tenant, server, digests): a field over its
// bound is cut at a character boundary and ends with a marker giving its whole length, and
// invalid UTF-8 is replaced, so that the call is still recorded (trimText). Only what the
// gateway itself makes and recovery keys on is refused when out of bounds (InvalidArgument):
// the call_id and arguments_form.
const (
	maxRequestBytes   = 256 << 10
	maxRecordBytes    = 64 << 10 // the record's JSON, as stored
	maxIDBytes        = 512      // trace, session, principal, tenant, server, method, digests, version, revision
	maxCallIDBytes    = 128
	maxToolBytes      = 4096 // a tool name or resource URI
	maxErrorBytes     = 8192
	maxArgumentsBytes = 16 << 10 // stored arguments (redacted or full)
	maxPolicyIDs      = 64       // beyond, the first 63 and a marker saying how many in all
	maxMaxBatch       = 1 << 16
)

// Defaults and bounds of segments.
const (
	defaultSegmentBytes = 64 << 20
	minSegmentBytes     = 64 << 10
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
	segmentBytes                                    int64
	anchor                                          Anchor // nil: none
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
	// SegmentBytes is the size past which the log starts a new segment file. Default 64 MiB;
	// at least 64 KiB.
	SegmentBytes int64
	// SigningKeyFile is a PEM file of the Ed25519 key that signs checkpoints of the log's
	// head. It must not be inside Dir: whoever can edit the log must not hold the key. Empty:
	// no checkpoints (the chain then shows accidental damage only).
	SigningKeyFile string
	// CheckpointRecords and CheckpointInterval say how often the head is signed: after that
	// many records, or that long, whichever comes first. Defaults 1000 and 10s.
	CheckpointRecords  int
	CheckpointInterval time.Duration
	// AuthAddr and PolicyAddr are authsvc's and policysvc's addresses, where the standalone
	// binary authenticates operators calling Query and Tail with their own credential and
	// asks whether they may (admin/audit.read).
	AuthAddr   string
	PolicyAddr string
	// KeyPrefix is where the log keeps its keys in etcd when it has one (the anchor:
	// <KeyPrefix>audit/anchor; <KeyPrefix>audit/anchor-postgres for the postgres store,
	// AnchorKeyFor). Empty means DefaultKeyPrefix.
	KeyPrefix string
	// AlertFile is a gatehouse YAML file whose alerts: section sets the alert rules over
	// the committed records and the appends (package alerts); empty, or no such section: no
	// alerts.
	AlertFile string
	// Store is where the log is kept: StoreFile (default: segment files in Dir) or
	// StorePostgres (tables that several replicas share, one chain; see pgstore.go).
	Store string
	// PostgresDSNFile is a file (mode 0600) holding the PostgreSQL connection string of the
	// postgres store. The DSN carries a password, so it is never a flag's value: this file,
	// or PostgresDSN.
	PostgresDSNFile string
	// PostgresDSN is the connection string itself; not a flag (the binary reads it from
	// GATEHOUSE_AUDIT_POSTGRES_DSN, svcmain.ReadSecret). PostgresDSNFile wins when both are set.
	PostgresDSN string
	// PostgresConns bounds the store's connections (default 4), and PostgresTimeout each
	// commit, statement and lock wait (default 10s, at most 5m).
	PostgresConns   int
	PostgresTimeout time.Duration
	// Authorize decides operators' Query and Tail (admin/audit.read); nil refuses them. Not
	// a flag: the binary makes it from PolicyAddr, single-process mode from its policysvc.
	Authorize rpcserver.Authorizer
}

// RegisterFlags binds the configuration to flags with their defaults. Environment fallbacks
// (GATEHOUSE_AUDIT_<FLAG>) are svcmain's, applied to every flag alike.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7105", "address to serve on")
	fs.StringVar(&c.Dir, "dir", "./data/audit", "directory of the audit log")
	fs.IntVar(&c.MaxBatch, "max-batch", defaultMaxBatch, "most records committed by one write and fsync")
	fs.IntVar(&c.MaxQueue, "max-queue", 0, "most records not yet durable; appends wait for room beyond (0: 4 × max-batch)")
	fs.IntVar(&c.MaxQueueBytes, "max-queue-bytes", 0, "most bytes of records not yet durable (0: 16 MiB)")
	fs.StringVar(&c.AuthAddr, "auth-addr", "127.0.0.1:7101", "authsvc address, to authenticate operators calling Query and Tail with their own credential (empty: internal token only)")
	fs.StringVar(&c.PolicyAddr, "policy-addr", "127.0.0.1:7102", "policysvc address, which decides which operators may read the log (admin/audit.read)")
	fs.DurationVar(&c.CommitDelay, "commit-delay", 0, "how long deferred records wait for a durable append to share their fsync (0: 2ms; negative: none)")
	fs.Int64Var(&c.SegmentBytes, "segment-bytes", defaultSegmentBytes, "size past which the log starts a new segment file")
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", "", "PEM file of the Ed25519 key that signs checkpoints of the log's head (outside --dir; empty: no checkpoints)")
	fs.IntVar(&c.CheckpointRecords, "checkpoint-records", defaultCheckpointRecords, "sign a checkpoint of the head after this many records")
	fs.StringVar(&c.KeyPrefix, "key-prefix", DefaultKeyPrefix, "etcd key prefix of the audit log's anchor (<prefix>audit/anchor, or <prefix>audit/anchor-postgres with --store postgres)")
	fs.StringVar(&c.AlertFile, "alert-config", "", "YAML file whose alerts: section sets the alert rules and webhook (see docs/observability.md; empty: no alerts)")
	fs.StringVar(&c.Store, "store", StoreFile, "where the log is kept: file (segments in --dir) or postgres (shared by replicas; --postgres-dsn-file)")
	fs.StringVar(&c.PostgresDSNFile, "postgres-dsn-file", "", "file (mode 0600) holding the PostgreSQL connection string of --store postgres (or the environment's GATEHOUSE_AUDIT_POSTGRES_DSN)")
	fs.IntVar(&c.PostgresConns, "postgres-conns", defaultPostgresConns, "most connections to PostgreSQL (--store postgres)")
	fs.DurationVar(&c.PostgresTimeout, "postgres-timeout", defaultPostgresTimeout, "bound of one commit, statement or lock wait in PostgreSQL (--store postgres)")
	fs.DurationVar(&c.CheckpointInterval, "checkpoint-interval", defaultCheckpointInterval, "sign a checkpoint of the head at least this often while records come")
}

// Option configures what New gets beyond Config.
type Option func(*options)

type options struct {
	anchor  Anchor
	metrics prometheus.Registerer
}

// WithAnchor keeps the latest checkpoint in a (etcd: EtcdAnchor), outside the log's
// directory; New then also checks the log against it.
func WithAnchor(a Anchor) Option { return func(o *options) { o.anchor = a } }

// Service appends records to the log.
type Service struct {
	// store is the log (Append, Sync, Close, Stats, Verify): log (the file store) or a
	// *pgStore.
	store store
	// log is the file store; nil with the postgres store (Query, Tail, Path, Dir are the
	// file store's).
	log       *chainLog
	reads     *reads
	logger    *slog.Logger
	now       func() time.Time
	publicKey ed25519.PublicKey // nil without a signing key
	anchor    Anchor
	// authorize decides an operator's Verify (admin/audit.verify), as reads decides Query
	// and Tail (admin/audit.read): Config.Authorize; nil refuses operators (the internal
	// token and calls within the process are always served).
	authorize rpcserver.Authorizer
	verifying atomic.Bool
	// checkpointRecords and checkpointSlack are what Verify allows between checkpoints: the
	// configured interval, and the queue (records that may commit while the signer signs).
	checkpointRecords, checkpointSlack int
	metrics                            *telemetry.AuditMetrics // nil: metrics off (metrics.go)
	// alerts evaluates the alert rules (alerting.go); nil: none configured.
	alerts     *alerts.Engine
	alertsDone chan struct{}
}

// New opens or creates <cfg.Dir>/audit.log and recovers it: it verifies the whole chain
// (a break fails New with a *ChainError naming the sequence), cuts away a torn last line
// with a warning, appends durably an OUTCOME_UNKNOWN record (error "gateway stopped before
// the outcome was recorded") for every decision record without an outcome, and continues the
// chain from the last record. If those records cannot be written, New fails.
func New(cfg Config, logger *slog.Logger, opts ...Option) (*Service, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
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
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = defaultSegmentBytes
	}
	if cfg.SegmentBytes < minSegmentBytes {
		return nil, fmt.Errorf("auditsvc: segment bytes %d is below %d", cfg.SegmentBytes, minSegmentBytes)
	}
	if cfg.CheckpointRecords <= 0 {
		cfg.CheckpointRecords = defaultCheckpointRecords
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = defaultCheckpointInterval
	}
	if cfg.CheckpointInterval < minCheckpointInterval {
		return nil, fmt.Errorf("auditsvc: checkpoint interval %v is below %v", cfg.CheckpointInterval, minCheckpointInterval)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	switch cfg.Store {
	case "", StoreFile:
	case StorePostgres:
		return newPostgres(cfg, logger, o)
	default:
		return nil, fmt.Errorf("auditsvc: --store %q is not %q or %q", cfg.Store, StoreFile, StorePostgres)
	}
	if cfg.Dir == "" {
		return nil, errors.New("auditsvc: a directory is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("auditsvc: create dir: %w", err)
	}
	var key ed25519.PrivateKey
	if cfg.SigningKeyFile != "" {
		if inside(cfg.Dir, cfg.SigningKeyFile) {
			return nil, fmt.Errorf("auditsvc: the signing key %s is inside the log's directory %s: keep it where whoever can edit the log cannot read it", cfg.SigningKeyFile, cfg.Dir)
		}
		var err error
		if key, err = LoadSigningKey(cfg.SigningKeyFile); err != nil {
			return nil, fmt.Errorf("auditsvc: %w", err)
		}
	} else {
		logger.Warn("no --signing-key-file: the audit log's head is not signed, so an edit that recomputes the chain goes unnoticed")
	}
	l, err := openLog(cfg.Dir, limits{
		maxBatch:      cfg.MaxBatch,
		maxQueue:      cfg.MaxQueue,
		maxQueueBytes: cfg.MaxQueueBytes,
		maxOpenCalls:  maxOpenCalls,
		commitDelay:   cfg.CommitDelay,
		segmentBytes:  cfg.SegmentBytes,
		anchor:        o.anchor,
		now:           time.Now,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("auditsvc: %w", err)
	}
	svc := &Service{store: l, log: l, reads: newReads(l, cfg.Authorize), logger: logger, now: time.Now, anchor: o.anchor, authorize: cfg.Authorize}
	if o.metrics != nil {
		m, err := telemetry.NewAuditMetrics(o.metrics, l.queuedRecords, telemetry.AuditCounts{
			Breaks: l.breaks.Load, CheckpointFailures: l.checkpointFailures.Load, LostRecords: l.lostDeferred.Load})
		if err != nil {
			l.abort()
			return nil, fmt.Errorf("auditsvc: %w", err)
		}
		svc.metrics, l.metrics = m, m
	}
	if key != nil {
		if err := l.startCheckpoints(key, o.anchor, uint64(cfg.CheckpointRecords), cfg.CheckpointInterval); err != nil {
			l.abort()
			return nil, fmt.Errorf("auditsvc: %w", err)
		}
		svc.publicKey = key.Public().(ed25519.PublicKey)
		svc.checkpointRecords, svc.checkpointSlack = cfg.CheckpointRecords, cfg.MaxQueue
	}
	l.notice.publish(l.seq, l.size)
	if err := svc.startAlerts(cfg.AlertFile, o); err != nil {
		svc.reads.close()
		l.abort()
		return nil, fmt.Errorf("auditsvc: %w", err)
	}
	l.start()
	logger.Info("audit log open", "dir", cfg.Dir, "segment", l.segName, "records", l.seq, "max_batch", cfg.MaxBatch,
		"max_queue", cfg.MaxQueue, "max_queue_bytes", cfg.MaxQueueBytes, "commit_delay", cfg.CommitDelay,
		"segment_bytes", cfg.SegmentBytes, "signed", key != nil, "anchored", o.anchor != nil)
	return svc, nil
}

// inside reports whether path is dir or below it.
func inside(dir, path string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// Path is the path of the segment the log appends to; "" with the postgres store.
func (s *Service) Path() string {
	if s.log == nil {
		return ""
	}
	return *s.log.path.Load()
}

// Dir is the log's directory; "" with the postgres store.
func (s *Service) Dir() string {
	if s.log == nil {
		return ""
	}
	return s.log.dir
}

// PublicKey is the public half of the key that signs the log's checkpoints, nil without one.
func (s *Service) PublicKey() ed25519.PublicKey { return s.publicKey }

// Handlers returns the AuditService handler to mount.
func (s *Service) Handlers() []rpcserver.Handler {
	path, h := auditv1connect.NewAuditServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	// Tail bounds each write through the response controller (read.go).
	return []rpcserver.Handler{{Service: auditv1connect.AuditServiceName, Path: path, Handler: rpcserver.WithResponseController(h)}}
}

// Close stops accepting records, commits those already queued (deferred ones included), and
// closes the log.
func (s *Service) Close(ctx context.Context) error {
	if s.reads != nil {
		s.reads.close() // Tail streams end, and the alerts' follower
	}
	err := s.store.close(ctx)
	s.stopAlerts(ctx)
	return err
}

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
	ctx, span := telemetry.StartHandler(ctx, tracerScope, auditv1connect.AuditServiceAppendProcedure)
	start := time.Now()
	defer func() {
		s.metrics.Append(req.Msg.GetDeferred(), time.Since(start), err != nil)
		s.alerts.ObserveAppend(!req.Msg.GetDeferred(), time.Since(start), connect.CodeOf(err) == connect.CodeUnavailable) // not durable: fail closed
		s.endAppend(ctx, span, req.Msg, err)
	}()
	rec := req.Msg.GetRecord()
	if err := validateRecord(rec); err != nil {
		return nil, toConnect(err)
	}
	if rec.GetTime() == nil || needsTrimRecord(rec) {
		rec = proto.CloneOf(rec) // the caller's message is not changed
		if rec.Time == nil {
			rec.Time = timestamppb.New(s.now())
		}
		trimRecord(rec)
	}
	b, err := marshalRecord(s.store.nextID(), rec)
	if err != nil {
		return nil, toConnect(err)
	}
	seq, hash, err := s.store.append(ctx, b, rec, req.Msg.GetDeferred())
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&auditv1.AppendResponse{Sequence: seq, Hash: hash}), nil
}

// Sync returns once every record appended before it (deferred ones included) is durable. It
// fails with Unavailable if the log cannot say so: the commit failed, the log is broken, or a
// deferred record has been lost since the log was opened (Stats.LostDeferred).
func (s *Service) Sync(ctx context.Context) error {
	if err := s.store.sync(ctx); err != nil {
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
	// Rotations counts segments started because the current one was full.
	Rotations uint64
	// Breaks counts damage found at start (a broken chain, or a head the anchor names that
	// the log does not hold): each was logged at ERROR and recorded at the start of a new
	// segment. It is the alert's counter until issue 8's alerts exist.
	Breaks uint64
	// Checkpoints counts signed checkpoints written; CheckpointFailures those not written or
	// not anchored (each logged at ERROR).
	Checkpoints, CheckpointFailures uint64
}

// Stats returns the log's counters now.
func (s *Service) Stats() Stats { return s.store.stats() }

// stats are the file store's counters (Service.Stats).
func (l *chainLog) stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		LostDeferred: l.lostDeferred.Load(),
		Commits:      l.commits.Load(),
		Queued:       l.queued,
		QueuedBytes:  l.queuedBytes,

		Rotations:          l.rotations.Load(),
		Breaks:             l.breaks.Load(),
		Checkpoints:        l.checkpoints.Load(),
		CheckpointFailures: l.checkpointFailures.Load(),
	}
}

// FailWrites makes every later write of the log fail with err, as a full disk does (pass an
// error wrapping syscall.ENOSPC), until it is called with nil. It is the fault hook for tests
// that cannot fill a real disk. Nothing is written while it lasts, so the log stays usable.
// With the postgres store, every commit fails before its transaction begins.
func (s *Service) FailWrites(err error) { s.store.failWrites(err) }

func (l *chainLog) failWrites(err error) {
	if err == nil {
		l.writeFault.Store(nil)
		return
	}
	l.writeFault.Store(&err)
}

// validateRecord checks what every record must have, by phase:
//   - PHASE_DECISION: a call_id, no outcome and no result_digest;
//   - PHASE_OUTCOME: a call_id and an outcome: ALLOWED, DENIED, FAILED or TIMED_OUT;
//   - PHASE_COMPLETE (or UNSPECIFIED, read as complete): an outcome, as for PHASE_OUTCOME.
//
// Every record needs a server and a method. OUTCOME_UNKNOWN is written by recovery only. The
// call_id must be UTF-8 within maxCallIDBytes and arguments_form "", "redacted" or "full";
// the other strings are trimmed instead (trimRecord), and the policy ids capped.
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
	if id := rec.GetCallId(); len(id) > maxCallIDBytes || !utf8.ValidString(id) {
		return invalid("call_id is not UTF-8 of at most %d bytes", maxCallIDBytes)
	}
	switch rec.GetArgumentsForm() {
	case "", ArgumentsRedacted, ArgumentsFull:
	default:
		return invalid("arguments_form %q is not %q or %q", rec.GetArgumentsForm(), ArgumentsRedacted, ArgumentsFull)
	}
	if err := validateDecision(rec); err != nil {
		return err
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

// The forms of stored arguments (Record.arguments_form).
const (
	ArgumentsRedacted = "redacted"
	ArgumentsFull     = "full"
)

// trimmed lists the strings of a record that are trimmed to their bound, and the bound.
func trimmed(rec *auditv1.Record) [13]struct {
	p   *string
	max int
} {
	return [13]struct {
		p   *string
		max int
	}{
		{&rec.TraceId, maxIDBytes}, {&rec.SessionId, maxIDBytes}, {&rec.Principal, maxIDBytes},
		{&rec.Tenant, maxIDBytes}, {&rec.Server, maxIDBytes}, {&rec.Method, maxIDBytes},
		{&rec.Tool, maxToolBytes}, {&rec.ArgumentsDigest, maxIDBytes}, {&rec.BundleVersion, maxIDBytes},
		{&rec.ResultDigest, maxIDBytes}, {&rec.Revision, maxIDBytes}, {&rec.Error, maxErrorBytes},
		{&rec.Arguments, maxArgumentsBytes},
	}
}

// needsTrimRecord reports whether trimRecord would change rec. It reads the caller's record
// without copying it (the common case: nothing to trim).
func needsTrimRecord(rec *auditv1.Record) bool {
	for _, f := range [...]struct {
		s   string
		max int
	}{
		{rec.GetTraceId(), maxIDBytes}, {rec.GetSessionId(), maxIDBytes}, {rec.GetPrincipal(), maxIDBytes},
		{rec.GetTenant(), maxIDBytes}, {rec.GetServer(), maxIDBytes}, {rec.GetMethod(), maxIDBytes},
		{rec.GetTool(), maxToolBytes}, {rec.GetArgumentsDigest(), maxIDBytes}, {rec.GetBundleVersion(), maxIDBytes},
		{rec.GetResultDigest(), maxIDBytes}, {rec.GetRevision(), maxIDBytes}, {rec.GetError(), maxErrorBytes},
		{rec.GetArguments(), maxArgumentsBytes},
	} {
		if needsTrim(f.s, f.max) {
			return true
		}
	}
	if len(rec.GetPolicyIds()) > maxPolicyIDs {
		return true
	}
	for _, id := range rec.GetPolicyIds() {
		if needsTrim(id, maxIDBytes) {
			return true
		}
	}
	return false
}

// trimRecord trims every bounded string of rec (its own copy) with trimText, and keeps the
// first maxPolicyIDs-1 policy ids and a marker when there are more than maxPolicyIDs.
func trimRecord(rec *auditv1.Record) {
	for _, f := range trimmed(rec) {
		*f.p = trimText(*f.p, f.max)
	}
	if n := len(rec.PolicyIds); n > maxPolicyIDs {
		rec.PolicyIds = append(rec.PolicyIds[:maxPolicyIDs-1:maxPolicyIDs-1], fmt.Sprintf("…[truncated: %d policy ids in all]", n))
	}
	for i, id := range rec.PolicyIds {
		rec.PolicyIds[i] = trimText(id, maxIDBytes)
	}
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

// needsTrim reports whether trimText(s, max) would change s.
func needsTrim(s string, max int) bool { return len(s) > max || !utf8.ValidString(s) }

// trimError is trimText of an error text.
func trimError(s string) string { return trimText(s, maxErrorBytes) }

// trimText makes a text storable: invalid UTF-8 becomes U+FFFD, and a text longer than max is
// cut at a character boundary and ends with a marker giving its whole length, the whole
// within max.
func trimText(s string, max int) string {
	if !needsTrim(s, max) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	marker := fmt.Sprintf(" …[truncated: %d bytes in all]", len(s))
	keep := max - len(marker)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + marker
}
