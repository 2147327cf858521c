package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestPostgresAuditTwoReplicas is issue 8's "PostgreSQL store: two auditsvc processes
// appending concurrently produce one chain that verifies": two auditsvc binaries with
// --store postgres on one database, appended to at once over their Append RPCs by 16
// callers; then the table holds exactly the acknowledged records as one chain, 1..N without a
// gap, each at the sequence and with the hash its append was acknowledged with; both
// replicas' Verify RPC and `gatehouse audit verify --postgres-dsn-file` find nothing wrong;
// and one record's bytes changed in the table is named by its sequence.
func TestPostgresAuditTwoReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	dsnFile := pgtest.WriteDSNFile(t, dsn)
	state := t.TempDir()
	const token = "pgaudit-internal-token-0123456789"
	tokenFile := filepath.Join(state, "internal-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "auditsvc")
	build := exec.Command("go", "build", "-o", bin, "./auditsvc/cmd/auditsvc")
	build.Dir = gatehousetest.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The DSN's password alone must not show either (a log of the connection's settings
	// without the rest of the DSN would still leak it).
	pc, err := pgx.ParseConfig(dsn)
	if err != nil || len(pc.Password) < 8 {
		t.Fatalf("the test DSN has no password to look for: %v", err)
	}
	password := pc.Password
	addrs := []string{freeAddr(t), freeAddr(t)}
	clients := make([]auditv1connect.AuditServiceClient, len(addrs))
	allLogs := make([]*testsync.Buffer, len(addrs))
	for i, addr := range addrs {
		logs := &testsync.Buffer{}
		allLogs[i] = logs
		// No authsvc or policysvc here: the internal token only (Verify with it needs no
		// policy).
		cmd := exec.Command(bin, "-store", "postgres", "-postgres-dsn-file", dsnFile, "-postgres-conns", "4",
			"-max-batch", "64", "-auth-addr=", "-policy-addr=")
		cmd.Env = append(os.Environ(), "GATEHOUSE_AUDIT_LISTEN="+addr, "GATEHOUSE_INTERNAL_TOKEN_FILE="+tokenFile)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		testsync.WaitFor(t, 60*time.Second, fmt.Sprintf("auditsvc %d to serve", i), func() bool {
			select {
			case <-done:
				t.Fatalf("auditsvc %d exited before serving:\n%s", i, logs.String())
			default:
			}
			return strings.Contains(logs.String(), `"msg":"serving"`)
		})
		if strings.Contains(logs.String(), dsn) || strings.Contains(logs.String(), password) {
			t.Errorf("auditsvc %d logged the DSN or its password:\n%s", i, logs.String())
		}
		clients[i] = auditv1connect.NewAuditServiceClient(rpcserver.WithToken(rpcserver.NewClient(), token), rpcserver.BaseURL(addr))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const callers, each = 16, 38 // 608 appends, about 2×300
	type ack struct {
		seq  uint64
		hash string
	}
	var mu sync.Mutex
	acks := map[string]ack{} // call id → what its append was acknowledged with
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := clients[c%2]
			for i := range each {
				id := fmt.Sprintf("pg-%02d-%03d", c, i)
				resp, err := client.Append(ctx, connect.NewRequest(&auditv1.AppendRequest{Record: &auditv1.Record{
					Time: timestamppb.Now(), CallId: id, TraceId: id, Principal: "alice", Tenant: "acme",
					Server: "files", Method: "tools/call", Tool: "read",
					Phase: auditv1.Phase_PHASE_COMPLETE, Outcome: auditv1.Outcome_OUTCOME_ALLOWED,
				}}))
				if err != nil {
					t.Errorf("append %s to replica %d: %v", id, c%2, err)
					return
				}
				mu.Lock()
				acks[id] = ack{resp.Msg.GetSequence(), resp.Msg.GetHash()}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// The table, as an operator's SQL sees it.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT seq, convert_from(line, 'UTF8') FROM gatehouse_audit_records ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[uint64]string{}
	var n uint64
	for rows.Next() {
		var seq int64
		var line string
		if err := rows.Scan(&seq, &line); err != nil {
			t.Fatal(err)
		}
		n++
		if uint64(seq) != n {
			t.Fatalf("row %d has sequence %d: a gap or a duplicate", n, seq)
		}
		lines[n] = line
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(acks)) || n != callers*each {
		t.Fatalf("%d records in the table, %d appends acknowledged, %d made", n, len(acks), callers*each)
	}
	for id, a := range acks {
		line, ok := lines[a.seq]
		if !ok || !strings.Contains(line, `"call_id":"`+id+`"`) || !strings.HasSuffix(line, `"hash":"`+a.hash+`"}`) {
			t.Fatalf("record %s acknowledged at sequence %d (hash %s) is not there: %q", id, a.seq, a.hash, line)
		}
	}

	for i, c := range clients {
		v, err := c.Verify(ctx, connect.NewRequest(&auditv1.VerifyRequest{}))
		if err != nil {
			t.Fatalf("Verify of replica %d: %v", i, err)
		}
		if len(v.Msg.GetProblems()) > 0 || v.Msg.GetRecords() != n {
			t.Fatalf("Verify of replica %d: %d records, problems %v; want %d and none", i, v.Msg.GetRecords(), v.Msg.GetProblems(), n)
		}
	}
	out, errOut, err := gatehouseCLI(t, nil, "audit", "verify", "--postgres-dsn-file", dsnFile, "--no-key")
	if err != nil || !strings.Contains(out, "ok: the audit log verifies") || !strings.Contains(out, fmt.Sprintf("%d records", n)) {
		t.Fatalf("gatehouse audit verify --postgres-dsn-file: %v\n%s%s", err, out, errOut)
	}

	// One record's bytes changed, its hash left as it was.
	victim := n / 2
	if _, err := conn.Exec(ctx, `UPDATE gatehouse_audit_records SET line = convert_to(replace(convert_from(line, 'UTF8'), '"principal":"alice"', '"principal":"mallory"'), 'UTF8') WHERE seq = $1`, int64(victim)); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = gatehouseCLI(t, nil, "audit", "verify", "--postgres-dsn-file", dsnFile, "--no-key")
	if err == nil || !strings.Contains(errOut+out, fmt.Sprintf("broken in %s at sequence %d", "postgres:gatehouse_audit_records", victim)) {
		t.Fatalf("gatehouse audit verify after changing record %d: %v\n%s%s", victim, err, out, errOut)
	}
	v, err := clients[0].Verify(ctx, connect.NewRequest(&auditv1.VerifyRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if p := v.Msg.GetProblems(); len(p) != 1 || p[0].GetSequence() != victim {
		t.Fatalf("Verify RPC after changing record %d: %v", victim, p)
	}

	// The database down: an append is refused, and neither the error the caller sees nor
	// what the replica logs about it names the DSN or its password.
	pg.Stop(t)
	_, err = clients[0].Append(ctx, connect.NewRequest(&auditv1.AppendRequest{Record: &auditv1.Record{
		Time: timestamppb.Now(), CallId: "pg-down", Server: "files", Method: "tools/call",
		Phase: auditv1.Phase_PHASE_COMPLETE, Outcome: auditv1.Outcome_OUTCOME_ALLOWED,
	}}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("append with the database down: %v; want Unavailable", err)
	}
	if strings.Contains(err.Error(), dsn) || strings.Contains(err.Error(), password) {
		t.Fatalf("the refused append's error names the DSN or its password: %v", err)
	}
	testsync.WaitFor(t, 30*time.Second, "the failed commit logged", func() bool {
		return strings.Contains(allLogs[0].String(), "audit commit to PostgreSQL failed")
	})
	for i, logs := range allLogs {
		if strings.Contains(logs.String(), dsn) || strings.Contains(logs.String(), password) {
			t.Fatalf("auditsvc %d logged the DSN or its password with the database down:\n%s", i, logs.String())
		}
	}
}
