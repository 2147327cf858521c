package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/pgtest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/jackc/pgx/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// pgRecord is what the tests read of a row's line.
type pgRecord struct {
	Seq    uint64 `json:"seq"`
	Record struct {
		CallID    string `json:"call_id"`
		SessionID string `json:"session_id"`
		Method    string `json:"method"`
		Tool      string `json:"tool"`
		Outcome   string `json:"outcome"`
	} `json:"record"`
}

// pgRecords reads every record of the postgres store, as an operator's SQL would.
func pgRecords(t *testing.T, dsn string) []pgRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT line FROM gatehouse_audit_records ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]pgRecord, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal(l, &out[i]); err != nil {
			t.Fatalf("row %d: %v: %s", i+1, err, l)
		}
	}
	return out
}

// echoCalls connects to the gateway's echo server with the official SDK's client and calls
// echo n times; it returns the session's id.
func echoCalls(t *testing.T, g *gatehousetest.Gateway, n int, tag string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := g.Connect(t, ctx, "echo")
	defer cs.Close()
	for i := range n {
		text := fmt.Sprintf("%s %d", tag, i)
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
		if err != nil || res.IsError {
			t.Fatalf("echo %d: %v %+v\n%s", i, err, res, g.Logs())
		}
	}
	return cs.ID()
}

// echoOutcomes counts the tools/call echo calls of session whose outcome is recorded allowed.
func echoOutcomes(recs []pgRecord, session string) int {
	n := 0
	for _, r := range recs {
		if r.Record.SessionID == session && r.Record.Method == "tools/call" && r.Record.Tool == "echo" && r.Record.Outcome == "OUTCOME_ALLOWED" {
			n++
		}
	}
	return n
}

// TestPostgresUp: `gatehouse up --audit-store postgres --audit-postgres-dsn-file F` (bench/'s
// flags) records real MCP calls in PostgreSQL, signs checkpoints with up's default key and
// anchors them in its etcd: the Verify RPC (gatehouse audit verify --url) and the offline
// verification (--postgres-dsn-file, trusting <data-dir>/keys/audit-signing.pub) find nothing
// wrong; gatehouse audit query, replay and tail read the table online. Restarted with the DSN from GATEHOUSE_AUDIT_POSTGRES_DSN instead, it goes on with the
// same chain.
func TestPostgresUp(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase(t)
	dsnFile := pgtest.WriteDSNFile(t, dsn)
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	cfg := "servers:\n" + stdioEntry("echo", echo)
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg,
		Args: []string{"--audit-store", "postgres", "--audit-postgres-dsn-file", dsnFile, "--checkpoint-records", "4"}})
	session := echoCalls(t, g, 6, "pg")
	recs := pgRecords(t, dsn)
	if n := echoOutcomes(recs, session); n != 6 {
		t.Fatalf("%d allowed echo calls of session %s in the table, want 6: %+v", n, session, recs)
	}
	admin := []string{"GATEHOUSE_ADMIN_TOKEN=" + g.Token, "GATEHOUSE_URL=" + g.Base}
	// Query, replay and tail read the table over the gateway's RPCs.
	out, errOut, err := gatehouseCLI(t, admin, "audit", "query", "--json", "--session", session, "--tool", "echo")
	if n := strings.Count(out, "\n"); err != nil || n != 12 || strings.Count(out, `"phase":"PHASE_DECISION"`) != 6 {
		t.Fatalf("audit query --session --tool: %v, %d records\n%s%s", err, n, out, errOut)
	}
	out, errOut, err = gatehouseCLI(t, admin, "audit", "replay", session)
	if err != nil || strings.Count(out, "tools/call") != 6 {
		t.Fatalf("audit replay: %v\n%s%s", err, out, errOut)
	}
	tailOut := &testsync.Buffer{}
	tail := exec.Command(gatehousetest.Bin(t, gatehousetest.Gatehouse), "audit", "tail", "--json", "--tool", "echo")
	tail.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, admin...)
	tail.Stdout, tail.Stderr = tailOut, tailOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	tailDone := make(chan struct{})
	go func() { _ = tail.Wait(); close(tailDone) }()
	t.Cleanup(func() { _ = tail.Process.Kill(); <-tailDone })
	// Calls until one shows in the tail: it started, then saw a record appended after it.
	testsync.WaitFor(t, 60*time.Second, "audit tail to show an echo call made after it started", func() bool {
		late := echoCalls(t, g, 1, "late")
		return strings.Contains(tailOut.String(), `"session_id":"`+late+`"`)
	})
	out, errOut, err = gatehouseCLI(t, admin, "audit", "verify", "--url", g.Base)
	if err != nil || !strings.Contains(out, "ok: the audit log verifies") || !strings.Contains(out, "anchor at sequence") {
		t.Fatalf("verify over the RPC: %v\n%s%s", err, out, errOut)
	}
	recs = pgRecords(t, dsn)
	g.Stop(t)
	pc, err := pgx.ParseConfig(dsn)
	if err != nil || len(pc.Password) < 8 {
		t.Fatalf("the test DSN has no password to look for: %v", err)
	}
	password := pc.Password
	if strings.Contains(g.Logs(), dsn) || strings.Contains(g.Logs(), password) {
		t.Fatalf("gatehouse logged the DSN or its password:\n%s", g.Logs())
	}
	out, errOut, err = gatehouseCLI(t, nil, "audit", "verify", "--postgres-dsn-file", dsnFile, "--data-dir", g.DataDir)
	if err != nil || !strings.Contains(out, "ok: the audit log verifies") || strings.Contains(out, " 0 checkpoints verified") {
		t.Fatalf("verify offline: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, fmt.Sprintf("the last at sequence %d", len(recs))) {
		t.Fatalf("verify offline: the last checkpoint is not the head (%d records):\n%s", len(recs), out)
	}

	// Again, the DSN from the environment.
	g = gatehousetest.Start(t, gatehousetest.Options{Config: cfg, DataDir: g.DataDir,
		Args: []string{"--audit-store", "postgres"}, Env: []string{"GATEHOUSE_AUDIT_POSTGRES_DSN=" + dsn}})
	session = echoCalls(t, g, 2, "env")
	if n := echoOutcomes(pgRecords(t, dsn), session); n != 2 {
		t.Fatalf("%d allowed echo calls of the second session, want 2", n)
	}
	out, errOut, err = gatehouseCLI(t, admin, "audit", "verify", "--url", g.Base)
	if err != nil || !strings.Contains(out, "ok: the audit log verifies") {
		t.Fatalf("verify over the RPC after the restart: %v\n%s%s", err, out, errOut)
	}

	// The database down: a call is refused (its decision cannot be recorded), and neither what
	// the host sees nor what gatehouse logs names the DSN or its password.
	pg.Stop(t)
	refused := refusedEcho(t, g)
	if strings.Contains(refused, dsn) || strings.Contains(refused, password) {
		t.Fatalf("the refused call's error names the DSN or its password: %s", refused)
	}
	testsync.WaitFor(t, 30*time.Second, "the failed commit logged", func() bool {
		return strings.Contains(g.Logs(), "audit commit to PostgreSQL failed")
	})
	if strings.Contains(g.Logs(), dsn) || strings.Contains(g.Logs(), password) {
		t.Fatalf("gatehouse logged the DSN or its password with the database down:\n%s", g.Logs())
	}
}

// refusedEcho makes one echo call that must be refused and returns what the host sees of it.
func refusedEcho(t *testing.T, g *gatehousetest.Gateway) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "gatehouse-e2e", Version: "1.0.0"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: g.Endpoint("echo"), HTTPClient: g.AuthClient()}, nil)
	if err != nil {
		return err.Error() // refused at initialize, which is audited too
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "down"}})
	if err != nil {
		return err.Error()
	}
	if !res.IsError {
		t.Fatalf("echo with the audit database down was answered: %+v", res)
	}
	b, _ := json.Marshal(res)
	return string(b)
}
