package auditsvc_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/etcdtest"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/jackc/pgx/v5"
)

// pgSigned is a postgres store's database with a signing key (kept in a directory of its
// own) and an anchor in the shared etcd under a key of the test's own.
type pgSigned struct {
	dsn    string
	pub    ed25519.PublicKey
	anchor *auditsvc.EtcdAnchor
	cfg    auditsvc.Config
}

func newPgSigned(t *testing.T, pg *pgtest.Postgres, every int) *pgSigned {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "keys", "audit-signing.pem")
	k, err := auditsvc.EnsureSigningKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &pgSigned{dsn: pg.CreateDatabase(t), pub: k.Public().(ed25519.PublicKey),
		anchor: auditsvc.NewEtcdAnchor(etcd.Client, etcdtest.Prefix(t)+"anchor")}
	s.cfg = auditsvc.Config{Store: auditsvc.StorePostgres, PostgresDSN: s.dsn, PostgresTimeout: 5 * time.Second,
		SigningKeyFile: keyFile, CheckpointRecords: every}
	return s
}

func (s *pgSigned) open(t *testing.T) *auditsvc.Service {
	t.Helper()
	svc, err := auditsvc.New(s.cfg, nil, auditsvc.WithAnchor(s.anchor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

func (s *pgSigned) verify(t *testing.T) *auditv1.VerifyResponse {
	t.Helper()
	resp, err := auditsvc.VerifyPostgres(context.Background(), s.dsn, auditsvc.VerifyOptions{PublicKey: s.pub, Anchor: s.anchor,
		CheckpointRecords: s.cfg.CheckpointRecords, Slack: auditsvc.DefaultCheckpointSlack})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// pgLines reads every record's line, by sequence from 1.
func pgLines(t *testing.T, dsn string) []string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT convert_from(line, 'UTF8') FROM gatehouse_audit_records ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestPostgresTamperEvidence is TestTamperEvidence for the postgres store: what the chain and
// the head row cannot show once whoever writes the tables rewrites them too, the signed
// checkpoints (in their own table) and the anchor in etcd do.
func TestPostgresTamperEvidence(t *testing.T) {
	pg := pgtest.Start(t)
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *pgSigned)
		check  func(t *testing.T, ps []*auditv1.Problem)
	}{
		{"a byte changed", func(t *testing.T, s *pgSigned) {
			pgExec(t, s.dsn, `UPDATE gatehouse_audit_records SET line = convert_to(replace(convert_from(line, 'UTF8'), '"principal":"alice"', '"principal":"alicf"'), 'UTF8') WHERE seq = 7`)
		}, func(t *testing.T, ps []*auditv1.Problem) {
			if len(ps) != 1 || ps[0].GetKind() != auditsvc.KindBroken || ps[0].GetSequence() != 7 {
				t.Fatalf("problems %v; want one broken record at 7", ps)
			}
		}},
		{"a record changed, the chain and the head row recomputed", func(t *testing.T, s *pgSigned) {
			l := pgLines(t, s.dsn)
			l[6] = strings.Replace(l[6], `"principal":"alice"`, `"principal":"mallory"`, 1)
			l = rechain(l, 6)
			for i := 6; i < len(l); i++ {
				pgExec(t, s.dsn, `UPDATE gatehouse_audit_records SET line = convert_to($1, 'UTF8') WHERE seq = $2`, l[i], i+1)
			}
			last := l[len(l)-1]
			pgExec(t, s.dsn, `UPDATE gatehouse_audit_head SET hash = $1`, last[len(last)-66:len(last)-2])
			// The chain alone is whole again.
			if resp, err := auditsvc.VerifyPostgres(context.Background(), s.dsn, auditsvc.VerifyOptions{}); err != nil {
				t.Fatal(err)
			} else {
				for _, p := range resp.GetProblems() {
					if p.GetKind() == auditsvc.KindBroken || p.GetSegment() != auditsvc.PostgresSegment {
						t.Fatalf("the recomputed chain is broken: %v", p)
					}
				}
			}
		}, func(t *testing.T, ps []*auditv1.Problem) {
			// The line was edited, its principal column not: Verify says so first.
			if len(ps) == 0 || ps[0].GetKind() != auditsvc.KindColumnMismatch || ps[0].GetSequence() != 7 {
				t.Fatalf("problems %v; want the principal column's mismatch at 7 first", ps)
			}
			ps = ps[1:]
			// Checkpoints are signed off the append path, so which sequences they sign
			// varies: every one from the changed record on mismatches, then the anchor.
			var kinds []string
			want := make([]string, len(ps))
			for i, p := range ps {
				kinds = append(kinds, p.GetKind())
				want[i] = auditsvc.KindCheckpointMismatch
			}
			if len(ps) < 2 {
				t.Fatalf("problems %v; want checkpoint mismatches from 7 on, then the anchor's", ps)
			}
			want[len(want)-1] = auditsvc.KindAnchorMismatch
			if fmt.Sprint(kinds) != fmt.Sprint(want) || ps[0].GetSequence() < 7 || !strings.Contains(ps[0].GetReason(), "was changed and the chain recomputed") {
				t.Fatalf("problems %v; want checkpoint mismatches from sequence 7 on, then the anchor's", ps)
			}
		}},
		{"the last records cut off", func(t *testing.T, s *pgSigned) {
			pgExec(t, s.dsn, `DELETE FROM gatehouse_audit_records WHERE seq > 5`)
		}, func(t *testing.T, ps []*auditv1.Problem) {
			cutOffOnly(t, ps, false)
		}},
		{"the last records cut off and the head row rewritten", func(t *testing.T, s *pgSigned) {
			l := pgLines(t, s.dsn)
			pgExec(t, s.dsn, `DELETE FROM gatehouse_audit_records WHERE seq > 5`)
			pgExec(t, s.dsn, `UPDATE gatehouse_audit_head SET seq = 5, hash = $1`, l[4][len(l[4])-66:len(l[4])-2])
		}, func(t *testing.T, ps []*auditv1.Problem) {
			cutOffOnly(t, ps, true)
		}},
		{"checkpoints removed", func(t *testing.T, s *pgSigned) {
			pgExec(t, s.dsn, `DELETE FROM gatehouse_audit_checkpoints`)
		}, func(t *testing.T, ps []*auditv1.Problem) {
			// The anchor still matches; with every checkpoint gone, 30 records are unsigned
			// though one is signed every 10 (a slack of 0 here).
			if len(ps) != 1 || ps[0].GetKind() != auditsvc.KindMissingCheckpoints {
				t.Fatalf("problems %v; want missing_checkpoints", ps)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newPgSigned(t, pg, 10)
			svc := s.open(t)
			for i := range 30 {
				if _, err := appendRecord(svc, record(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := svc.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			resp := s.verify(t)
			if len(resp.GetProblems()) != 0 || resp.GetRecords() != 30 || resp.GetCheckpoints() < 1 ||
				resp.GetLastCheckpoint().GetSequence() != 30 || resp.GetAnchor().GetSequence() != 30 {
				t.Fatalf("before tampering: %d records, %d checkpoints (the last at %d), anchor at %d, problems %v; want 30, some, 30, 30, none",
					resp.GetRecords(), resp.GetCheckpoints(), resp.GetLastCheckpoint().GetSequence(), resp.GetAnchor().GetSequence(), resp.GetProblems())
			}
			tt.tamper(t, s)
			if tt.name == "checkpoints removed" {
				resp, err := auditsvc.VerifyPostgres(context.Background(), s.dsn, auditsvc.VerifyOptions{PublicKey: s.pub, Anchor: s.anchor, CheckpointRecords: 10})
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, resp.GetProblems())
				return
			}
			tt.check(t, s.verify(t).GetProblems())
		})
	}
}

// cutOffOnly: every problem is cut_off, past sequence 5, the last the anchor's; with the head
// row rewritten, the head says nothing and the signed checkpoints and the anchor show it.
func cutOffOnly(t *testing.T, ps []*auditv1.Problem, headRewritten bool) {
	t.Helper()
	if len(ps) < 2 || ps[0].GetSequence() <= 5 || !strings.Contains(ps[len(ps)-1].GetReason(), "anchored") {
		t.Fatalf("problems %v; want every checkpoint past the cut and the anchor", ps)
	}
	for _, p := range ps {
		if p.GetKind() != auditsvc.KindCutOff {
			t.Fatalf("problems %v; want cut_off only", ps)
		}
		if headRewritten && strings.Contains(p.GetReason(), "head row") {
			t.Fatalf("problems %v; the head row was rewritten to match", ps)
		}
	}
	if !headRewritten && !strings.Contains(ps[0].GetReason(), "head row") {
		t.Fatalf("problems %v; want the head row's first", ps)
	}
}

// TestPostgresCheckpointsTwoReplicas: two replicas with one key append at once; they make one
// chain of checkpoints (indexes 1..N, each after the one before, sequences increasing), never
// two for one index, the anchor holds the last, and every verification (each replica's RPC,
// live and after, offline) finds nothing wrong.
func TestPostgresCheckpointsTwoReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	s := newPgSigned(t, pg, 5)
	s.cfg.MaxBatch = 8
	a, b := s.open(t), s.open(t)
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			svc := a
			if c%2 == 1 {
				svc = b
			}
			for i := range 40 {
				if _, err := appendRecord(svc, record(c*40+i)); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, svc := range []*auditsvc.Service{a, b} {
		if v := verifyRPC(t, svc); len(v.GetProblems()) > 0 || v.GetRecords() != 320 || v.GetCheckpoints() < 2 {
			t.Fatalf("live Verify: %d records, %d checkpoints, problems %v", v.GetRecords(), v.GetCheckpoints(), v.GetProblems())
		}
	}
	signed := a.Stats().Checkpoints + b.Stats().Checkpoints
	if err := errorsJoin(a.Close(context.Background()), b.Close(context.Background())); err != nil {
		t.Fatal(err)
	}
	if a.Stats().CheckpointFailures+b.Stats().CheckpointFailures != 0 {
		t.Fatalf("checkpoint failures: %d, %d", a.Stats().CheckpointFailures, b.Stats().CheckpointFailures)
	}
	if a.Stats().Checkpoints == 0 || b.Stats().Checkpoints == 0 {
		t.Logf("one replica signed every checkpoint (%d, %d)", a.Stats().Checkpoints, b.Stats().Checkpoints)
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT idx, seq FROM gatehouse_audit_checkpoints ORDER BY idx`)
	if err != nil {
		t.Fatal(err)
	}
	var n, prevSeq int64
	for rows.Next() {
		var idx, seq int64
		if err := rows.Scan(&idx, &seq); err != nil {
			t.Fatal(err)
		}
		n++
		if idx != n || seq <= prevSeq {
			t.Fatalf("checkpoint %d at sequence %d after %d checkpoints, the last at %d: want one chain, each signing a later head", idx, seq, n-1, prevSeq)
		}
		prevSeq = seq
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if prevSeq != 320 || n < 2 || uint64(n) < signed {
		t.Fatalf("%d checkpoints, the last at %d (%d counted by the replicas); want several, the last at 320", n, prevSeq, signed)
	}
	resp := s.verify(t)
	if len(resp.GetProblems()) > 0 || resp.GetCheckpoints() != uint64(n) || resp.GetAnchor().GetSequence() != 320 {
		t.Fatalf("offline: %d checkpoints, anchor at %d, problems %v", resp.GetCheckpoints(), resp.GetAnchor().GetSequence(), resp.GetProblems())
	}
}

func errorsJoin(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestPostgresCheckpointInterval: with few records (fewer than --checkpoint-records), the head
// is still signed within --checkpoint-interval: the bound of what goes unsigned.
func TestPostgresCheckpointInterval(t *testing.T) {
	pg := pgtest.Start(t)
	s := newPgSigned(t, pg, 1000)
	s.cfg.CheckpointInterval = 200 * time.Millisecond
	svc := s.open(t)
	for i := range 3 {
		if _, err := appendRecord(svc, record(i)); err != nil {
			t.Fatal(err)
		}
	}
	testsync.WaitFor(t, 30*time.Second, "the head at 3 signed", func() bool {
		v := verifyRPC(t, svc)
		return v.GetLastCheckpoint().GetSequence() == 3 && v.GetAnchor().GetSequence() == 3 && len(v.GetProblems()) == 0
	})
}
