// Package auditsvc is Gatehouse's append-only audit log: one record per invocation, hash
// chained, committed in groups with fsync and acknowledged only once durable. It keeps one
// file today (<dir>/audit.log, JSON lines); Verify checks a log's chain.
package auditsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FileName is the log's name inside Config.Dir.
const FileName = "audit.log"

// Limits on a record: every field comes from another service, but is still bounded.
const (
	maxRequestBytes = 256 << 10
	maxRecordBytes  = 64 << 10 // the record's JSON, as stored
	maxIDBytes      = 512      // trace, session, principal, tenant, server, method, digest, version
	maxToolBytes    = 4096     // a tool name or resource URI
	maxErrorBytes   = 8192
	maxPolicyIDs    = 64
	maxMaxBatch     = 1 << 16
)

// Config is the audit service's configuration.
type Config struct {
	// Listen is the address the standalone binary serves on.
	Listen string
	// Dir holds the log file; it is created if missing.
	Dir string
	// MaxBatch is the most records committed by one write and fsync.
	MaxBatch int

	envErr error
}

// RegisterFlags binds the configuration to flags, with GATEHOUSE_AUDIT_* env fallbacks
// (e.g. GATEHOUSE_AUDIT_DIR). A malformed env value is reported by New.
func (c *Config) RegisterFlags(fs *flag.FlagSet, getenv func(string) string) {
	env := func(name, def string) string {
		if v := getenv("GATEHOUSE_AUDIT_" + name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&c.Listen, "listen", env("LISTEN", "127.0.0.1:7105"), "address to serve on")
	fs.StringVar(&c.Dir, "dir", env("DIR", "./data/audit"), "directory of the audit log")
	batch, err := strconv.Atoi(env("MAX_BATCH", "256"))
	if err != nil {
		c.envErr = fmt.Errorf("GATEHOUSE_AUDIT_MAX_BATCH: %w", err)
	}
	fs.IntVar(&c.MaxBatch, "max-batch", batch, "most records committed by one write and fsync")
}

// Service appends records to the log.
type Service struct {
	log    *chainLog
	logger *slog.Logger
	now    func() time.Time
}

// New opens or creates <cfg.Dir>/audit.log and recovers it: it verifies the whole chain
// (a break fails New with a *ChainError naming the sequence), cuts away a torn last line
// with a warning, and continues the chain from the last record.
func New(cfg Config, logger *slog.Logger) (*Service, error) {
	if cfg.envErr != nil {
		return nil, fmt.Errorf("auditsvc config: %w", cfg.envErr)
	}
	if cfg.Dir == "" {
		return nil, errors.New("auditsvc: a directory is required")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.MaxBatch > maxMaxBatch {
		return nil, fmt.Errorf("auditsvc: max batch %d is above %d", cfg.MaxBatch, maxMaxBatch)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("auditsvc: create dir: %w", err)
	}
	path := filepath.Join(cfg.Dir, FileName)
	l, err := openLog(path, cfg.MaxBatch, logger)
	if err != nil {
		return nil, fmt.Errorf("auditsvc: %w", err)
	}
	logger.Info("audit log open", "path", path, "records", l.seq, "max_batch", cfg.MaxBatch)
	return &Service{log: l, logger: logger, now: time.Now}, nil
}

// Path is the log file's path.
func (s *Service) Path() string { return s.log.path }

// Handlers returns the AuditService handler to mount.
func (s *Service) Handlers() []rpcserver.Handler {
	path, h := auditv1connect.NewAuditServiceHandler(s, connect.WithReadMaxBytes(maxRequestBytes))
	return []rpcserver.Handler{{Service: auditv1connect.AuditServiceName, Path: path, Handler: h}}
}

// Close stops accepting records, commits those already queued, and closes the log.
func (s *Service) Close(ctx context.Context) error { return s.log.close(ctx) }

// Append implements auditv1connect.AuditServiceHandler: it returns once the record is
// durable, with its sequence and chain hash. A record that could not be written is
// answered Unavailable and is not in the log.
func (s *Service) Append(ctx context.Context, req *connect.Request[auditv1.AppendRequest]) (*connect.Response[auditv1.AppendResponse], error) {
	rec := req.Msg.GetRecord()
	if err := validateRecord(rec); err != nil {
		return nil, toConnect(err)
	}
	if rec.GetTime() == nil {
		rec.Time = timestamppb.New(s.now())
	}
	b, err := marshalRecord(rec)
	if err != nil {
		return nil, toConnect(err)
	}
	seq, hash, err := s.log.append(ctx, b)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&auditv1.AppendResponse{Sequence: seq, Hash: hash}), nil
}

// marshalRecord is the record as stored: protojson with the proto field names, compacted.
func marshalRecord(rec *auditv1.Record) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	if buf.Len() > maxRecordBytes {
		return nil, invalid("record is %d bytes encoded, more than %d", buf.Len(), maxRecordBytes)
	}
	return buf.Bytes(), nil
}

// validateRecord checks what every record must have, and bounds every field.
func validateRecord(rec *auditv1.Record) error {
	if rec == nil {
		return invalid("record is required")
	}
	switch rec.GetOutcome() {
	case auditv1.Outcome_OUTCOME_ALLOWED, auditv1.Outcome_OUTCOME_DENIED, auditv1.Outcome_OUTCOME_FAILED:
	case auditv1.Outcome_OUTCOME_UNSPECIFIED:
		return invalid("outcome is required")
	default:
		return invalid("unknown outcome %d", rec.GetOutcome())
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
		{"error", rec.GetError(), maxErrorBytes},
	} {
		if len(f.value) > f.max {
			return invalid("%s is longer than %d bytes", f.name, f.max)
		}
	}
	if len(rec.GetPolicyIds()) > maxPolicyIDs {
		return invalid("more than %d policy ids", maxPolicyIDs)
	}
	for _, id := range rec.GetPolicyIds() {
		if len(id) > maxIDBytes {
			return invalid("a policy id is longer than %d bytes", maxIDBytes)
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
