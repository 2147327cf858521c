package auditsvc

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/secret"
	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
)

// store is what Service needs of where the log is kept: the file store (chainLog, the
// default) or the PostgreSQL store (pgStore). Both take the same encoded record and chain it
// with appendLine, so a record's bytes and hash do not depend on the store.
type store interface {
	// nextID is a new record id.
	nextID() string
	// append queues a record (compact protojson; rec is what it encodes); unless deferred
	// it returns once the record is durable, with its sequence and hash.
	append(ctx context.Context, record []byte, rec *auditv1.Record, deferred bool) (uint64, string, error)
	// sync returns once everything queued before it is durable.
	sync(ctx context.Context) error
	// close commits what is queued and closes the store.
	close(ctx context.Context) error
	stats() Stats
	failWrites(err error)
	// verify checks the whole log.
	verify(ctx context.Context, opts VerifyOptions) (*auditv1.VerifyResponse, error)
}

var (
	_ store = (*chainLog)(nil)
	_ store = (*pgStore)(nil)
)

// newPostgres is New for Config.Store = StorePostgres. With a signing key, the replica signs
// the shared head into the checkpoints table and anchors it (pgcheckpoint.go); Query and Tail
// read the records table (pgread.go), and alerts follow it as Tail does. Recovery writes no
// OUTCOME_UNKNOWN records: with several replicas sharing the log, a decision without an outcome may be another live replica's call
// in flight (docs/architecture.md).
func newPostgres(cfg Config, logger *slog.Logger, o options) (*Service, error) {
	dsn := cfg.PostgresDSN
	if cfg.PostgresDSNFile != "" {
		var err error
		if dsn, err = secret.ReadFile(cfg.PostgresDSNFile); err != nil {
			return nil, fmt.Errorf("auditsvc: --postgres-dsn-file: %w", err)
		}
	}
	if dsn == "" {
		return nil, errors.New("auditsvc: --store postgres needs --postgres-dsn-file (or GATEHOUSE_AUDIT_POSTGRES_DSN)")
	}
	// Every replica signs with the same key (one key file given to all): they make one
	// chain of checkpoints in the database (pgcheckpoint.go).
	var key ed25519.PrivateKey
	if cfg.SigningKeyFile != "" {
		var err error
		if key, err = LoadSigningKey(cfg.SigningKeyFile); err != nil {
			return nil, fmt.Errorf("auditsvc: %w", err)
		}
	} else {
		logger.Warn("no --signing-key-file: the audit log's head is not signed, so an edit of the tables that recomputes the chain goes unnoticed")
	}
	conns := cfg.PostgresConns
	if conns == 0 {
		conns = defaultPostgresConns
	}
	if conns < 1 || conns > maxPostgresConns {
		return nil, fmt.Errorf("auditsvc: postgres conns %d is not between 1 and %d", conns, maxPostgresConns)
	}
	timeout := cfg.PostgresTimeout
	if timeout == 0 {
		timeout = defaultPostgresTimeout
	}
	if timeout < 100*time.Millisecond || timeout > maxPostgresTimeout {
		return nil, fmt.Errorf("auditsvc: postgres timeout %v is not between 100ms and %v", timeout, maxPostgresTimeout)
	}
	st, err := openPostgres(context.Background(), dsn, conns, timeout, limits{
		maxBatch: cfg.MaxBatch, maxQueue: cfg.MaxQueue, maxQueueBytes: cfg.MaxQueueBytes,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("auditsvc: %w", err)
	}
	if o.anchor != nil {
		if err := st.checkAnchor(context.Background(), o.anchor); err != nil {
			st.abort()
			return nil, fmt.Errorf("auditsvc: %w", err)
		}
	}
	svc := &Service{store: st, reads: newPgReads(st, cfg.Authorize), logger: logger, now: time.Now, authorize: cfg.Authorize, anchor: o.anchor}
	if o.metrics != nil {
		m, err := telemetry.NewAuditMetrics(o.metrics, st.queuedRecords, telemetry.AuditCounts{
			Breaks: st.breaks.Load, CheckpointFailures: st.checkpointFailures.Load, LostRecords: st.lostDeferred.Load})
		if err != nil {
			st.abort()
			return nil, fmt.Errorf("auditsvc: %w", err)
		}
		svc.metrics, st.metrics = m, m
	}
	if key != nil {
		st.startCheckpoints(key, o.anchor, uint64(cfg.CheckpointRecords), cfg.CheckpointInterval)
		svc.publicKey = key.Public().(ed25519.PublicKey)
		svc.checkpointRecords, svc.checkpointSlack = cfg.CheckpointRecords, cfg.MaxQueue*pgCheckpointSlackReplicas
	}
	// Alerts follow the committed records as Tail does, from the table (whoever appended).
	if err := svc.startAlerts(cfg.AlertFile, o); err != nil {
		svc.reads.close()
		st.stopCheckpointer()
		st.abort()
		return nil, fmt.Errorf("auditsvc: %w", err)
	}
	st.start()
	logger.Info("audit log open", "store", StorePostgres, "max_batch", cfg.MaxBatch, "max_queue", cfg.MaxQueue,
		"max_queue_bytes", cfg.MaxQueueBytes, "postgres_conns", conns, "postgres_timeout", timeout, "signed", key != nil, "anchored", o.anchor != nil)
	return svc, nil
}
