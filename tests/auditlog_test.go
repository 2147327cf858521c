package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1/auditv1connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
	"github.com/gatehouse-mcp/gatehouse/internal/rpcserver"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// TestSplitAuditKilledUnderLoad: auditsvc (its own process, anchoring its checkpoints in etcd)
// is SIGKILLed while four hosts keep calling, then started again. Calls are refused while it
// is down (-32004) and go through again after; every call a host saw complete has its decision
// record and an outcome (its own, or OUTCOME_UNKNOWN written by recovery), and the log, its
// checkpoints and its anchor verify over the Verify RPC.
func TestSplitAuditKilledUnderLoad(t *testing.T) {
	sp := startSplit(t, 1)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(sp.allLogs())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	auth := authv1connect.NewAuthServiceClient(&http.Client{Transport: gatehousetest.BearerTransport{Token: sp.admin, Base: rpcserver.NewClient().Transport}}, rpcserver.BaseURL(sp.addrs["auth"]))
	created, err := auth.CreateToken(ctx, connect.NewRequest(&authv1.CreateTokenRequest{PrincipalId: "dev", Tenant: "default", Kind: authv1.PrincipalKind_PRINCIPAL_KIND_USER}))
	if err != nil {
		t.Fatalf("CreateToken: %v\n%s", err, sp.allLogs())
	}
	token := created.Msg.GetToken()
	url := sp.endpoint("ingress", "echo-http")

	const workers, maxCalls = 4, 400 // bounded: each worker stops after maxCalls
	var (
		mu        sync.Mutex
		completed []string // trace ids of calls the host saw complete
		refused   atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(completed) }
	client := &http.Client{Timeout: 30 * time.Second}
	for w := range workers {
		sess := session(rawClient{t: t, url: url, token: token}.initialize("2025-06-18"))
		wg.Go(func() {
			for i := range maxCalls {
				select {
				case <-stop:
					return
				default:
				}
				trace := fmt.Sprintf("%08x%024x", w+1, i+1)
				h := map[string]string{"traceparent": "00-" + trace + "-00f067aa0ba902b7-01"}
				for k, v := range sess {
					h[k] = v
				}
				text := "load " + trace
				r, err := postRaw(ctx, client, url, token, toolCall("echo", `{"text":"`+text+`"}`), h)
				if err != nil {
					continue // the ingress answers even while auditsvc is down; a dropped connection is not a completion
				}
				if got, isErr, ok := r.toolText(); r.status == http.StatusOK && ok && !isErr && got == text {
					mu.Lock()
					completed = append(completed, trace)
					mu.Unlock()
				} else if code, _, isRPCErr := r.rpcError(); isRPCErr && code == -32004 {
					refused.Add(1)
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()

	testsync.WaitFor(t, 60*time.Second, "20 calls before the kill", func() bool { return count() >= 20 })
	audit := sp.procs["auditsvc"]
	if err := audit.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-audit.done
	testsync.WaitFor(t, 60*time.Second, "a call refused while auditsvc is down", func() bool { return refused.Load() > 0 })
	before := count()
	sp.restart(t, "auditsvc")
	testsync.WaitFor(t, 60*time.Second, "20 calls after the restart", func() bool { return count() >= before+20 })
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	t.Logf("%d calls completed, %d refused while auditsvc was down", count(), refused.Load())

	// Every completed call: a decision, and an outcome of the same call id.
	auditc := auditv1connect.NewAuditServiceClient(rpcserver.WithToken(rpcserver.NewClient(), sp.internal), rpcserver.BaseURL(sp.addrs["audit"]))
	var decisions map[string]string // trace id → call id
	testsync.WaitFor(t, 30*time.Second, "every completed call's records", func() bool {
		decisions = map[string]string{}
		outcomes := map[string]bool{}
		for _, r := range auditRecords(t, sp.state) {
			switch r.Phase {
			case "PHASE_DECISION":
				decisions[r.TraceID] = r.CallID
			case "PHASE_OUTCOME":
				if r.Outcome == "OUTCOME_ALLOWED" || r.Outcome == "OUTCOME_UNKNOWN" {
					outcomes[r.CallID] = true
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for _, tr := range completed {
			if id, ok := decisions[tr]; !ok || !outcomes[id] {
				return false
			}
		}
		return true
	})
	resp, err := auditc.Verify(ctx, connect.NewRequest(&auditv1.VerifyRequest{}))
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, sp.procs["auditsvc"].logs.String())
	}
	if ps := resp.Msg.GetProblems(); len(ps) > 0 || resp.Msg.GetAnchor() == nil || resp.Msg.GetCheckpoints() == 0 || resp.Msg.GetPublicKey() == "" {
		t.Fatalf("Verify after the kill: problems %v, anchor %v, %d checkpoints, key %q", ps, resp.Msg.GetAnchor(), resp.Msg.GetCheckpoints(), resp.Msg.GetPublicKey())
	}
}

// TestAuditVerifyCLI: `gatehouse up` with small segments rotates its audit log, and `gatehouse
// audit verify` passes it over the RPC and offline. Then, each on a copy of the stopped
// gateway's data: a byte changed is named by segment, line and sequence; a record changed with
// its chain recomputed by the checkpoint that no longer matches; the last records cut off by
// the checkpoint past the end. A record damaged while the gateway was down does not stop it:
// it starts a new segment after a record of the break, and verify names both.
func TestAuditVerifyCLI(t *testing.T) {
	t.Parallel()
	echoAddr := gatehousetest.StartServer(t, func(addr string) []string {
		return []string{gatehousetest.Bin(t, gatehousetest.EchoServer), "-http", addr}
	})
	cfg := "servers:\n" + httpEntry("echo", "http://"+echoAddr+"/mcp")
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg, Args: []string{"--segment-bytes", "65536", "--checkpoint-records", "40"}})
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	sess := session(c.initialize("2025-06-18"))
	for i := range 80 {
		text := fmt.Sprint("rotate ", i)
		if got, _, ok := c.post(toolCall("echo", `{"text":"`+text+`"}`), sess).toolText(); !ok || got != text {
			t.Fatalf("call %d did not go through:\n%s", i, g.Logs())
		}
	}
	admin := []string{"GATEHOUSE_ADMIN_TOKEN=" + g.Token}
	out, errOut, err := gatehouseCLI(t, admin, "audit", "verify", "--url", g.Base)
	if err != nil || !strings.Contains(out, "ok: the audit log verifies") || !strings.Contains(out, "anchor at sequence") {
		t.Fatalf("verify over the RPC: %v\n%s%s", err, out, errOut)
	}
	g.Stop(t)
	segs, _ := filepath.Glob(filepath.Join(g.DataDir, "audit", "audit-*.log"))
	slices.Sort(segs)
	segs = append([]string{filepath.Join(g.DataDir, "audit", "audit.log")}, segs...)
	if len(segs) < 3 {
		t.Fatalf("no segment after %s: the log did not rotate", filepath.Join(g.DataDir, "audit", "audit.log"))
	}
	out, errOut, err = gatehouseCLI(t, nil, "audit", "verify", "--data-dir", g.DataDir)
	if err != nil || !strings.Contains(out, "ok: the audit log verifies") {
		t.Fatalf("verify offline: %v\n%s%s", err, out, errOut)
	}

	// A byte of a record's time, which every record starts with.
	changeByte := func(line string) string {
		return strings.Replace(line, `"record":{"time":"2`, `"record":{"time":"3`, 1)
	}
	tests := []struct {
		name   string
		tamper func(auditDir string)
		want   string // in the CLI's error
	}{
		{"a byte changed", func(dir string) {
			editFile(t, filepath.Join(dir, "audit.log"), func(l []string) []string { l[4] = changeByte(l[4]); return l })
		}, "broken in audit.log at sequence 5 (line 5): hash does not match the record"},
		{"a record changed and the chain recomputed", func(dir string) {
			rechainDir(t, dir, 4, changeByte)
		}, "checkpoint_mismatch in audit"},
		{"the last records cut off", func(dir string) {
			last := segs[len(segs)-1] // the last segment with records (one just rotated to is empty)
			if fi, err := os.Stat(last); err == nil && fi.Size() == 0 {
				last = segs[len(segs)-2]
			}
			editFile(t, filepath.Join(dir, filepath.Base(last)), func(l []string) []string { return l[:len(l)-3] })
		}, "cut_off in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := copyAuditData(t, g.DataDir)
			tt.tamper(filepath.Join(data, "audit"))
			out, errOut, err := gatehouseCLI(t, nil, "audit", "verify", "--data-dir", data)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("verify: %v; want a non-zero exit naming %q\n%s%s", err, tt.want, out, errOut)
			}
		})
	}

	// Offline, the trusted key is the public key written when the signing key was minted, not
	// whatever the directory's checkpoints name: without it, verify fails unless told --no-key.
	data := copyAuditData(t, g.DataDir)
	if err := os.Remove(filepath.Join(data, "keys", "audit-signing.pub")); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = gatehouseCLI(t, nil, "audit", "verify", "--data-dir", data)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(errOut, "no trusted public key") {
		t.Fatalf("verify offline without a public key: %v; want a non-zero exit\n%s%s", err, out, errOut)
	}
	out, errOut, err = gatehouseCLI(t, nil, "audit", "verify", "--data-dir", data, "--no-key")
	if err != nil || !strings.Contains(out, "warning: --no-key") {
		t.Fatalf("verify offline --no-key: %v\n%s%s", err, out, errOut)
	}
	// The checkpoints removed along with an edit that recomputes the chain still show.
	data = copyAuditData(t, g.DataDir)
	rechainDir(t, filepath.Join(data, "audit"), 4, changeByte)
	if err := os.Remove(filepath.Join(data, "audit", "checkpoints.log")); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = gatehouseCLI(t, nil, "audit", "verify", "--data-dir", data, "--checkpoint-records", "40", "--checkpoint-slack", "0")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(errOut, "missing_checkpoints") {
		t.Fatalf("verify offline without checkpoints: %v; want missing_checkpoints\n%s%s", err, out, errOut)
	}

	// Damage found at start: the gateway starts, on a new segment after a record of the break.
	editFile(t, filepath.Join(g.DataDir, "audit", "audit.log"), func(l []string) []string { l[2] = changeByte(l[2]); return l })
	g = gatehousetest.Start(t, gatehousetest.Options{Config: cfg, DataDir: g.DataDir, Args: []string{"--segment-bytes", "65536"}})
	if !strings.Contains(g.Logs(), `"level":"ERROR","msg":"audit log damaged`) {
		t.Fatalf("no ERROR about the damage:\n%s", g.Logs())
	}
	c = rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	if got, _, ok := c.post(toolCall("echo", `{"text":"after the damage"}`), session(c.initialize("2025-06-18"))).toolText(); !ok || got != "after the damage" {
		t.Fatalf("a call after the damage did not go through:\n%s", g.Logs())
	}
	out, errOut, err = gatehouseCLI(t, []string{"GATEHOUSE_ADMIN_TOKEN=" + g.Token}, "audit", "verify", "--url", g.Base)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(errOut, "broken in audit.log at sequence 3 (line 3)") ||
		!strings.Contains(out, "continuation: audit-") || !strings.Contains(out, "recovered_break: audit-") {
		t.Fatalf("verify after the damage: %v; want the break, the continuation and the recorded break\n%s%s", err, out, errOut)
	}
}

// copyAuditData copies a data dir's audit log and keys (what verify --data-dir reads).
func copyAuditData(t *testing.T, dataDir string) string {
	t.Helper()
	dst := t.TempDir()
	for _, sub := range []string{"audit", "keys"} {
		if err := os.CopyFS(filepath.Join(dst, sub), os.DirFS(filepath.Join(dataDir, sub))); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func editFile(t *testing.T, path string, f func([]string) []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := f(strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"))
	text := strings.Join(lines, "\n") + "\n"
	if len(lines) == 0 {
		text = ""
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rechainDir edits a line of the first segment of an audit directory and recomputes every
// hash from it to the end of the last segment, as someone who can write the files would.
func rechainDir(t *testing.T, auditDir string, line int, edit func(string) string) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(auditDir, "audit-*.log"))
	slices.Sort(segs)
	segs = append([]string{filepath.Join(auditDir, "audit.log")}, segs...)
	var all []string
	var counts []int
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		all = append(all, lines...)
		counts = append(counts, len(lines))
	}
	all[line] = edit(all[line])
	for i := line; i < len(all); i++ {
		if i > line {
			prev := all[i-1][strings.LastIndex(all[i-1], `"hash":"`)+len(`"hash":"`):][:64]
			j := strings.Index(all[i], `"prev":"`) + len(`"prev":"`)
			all[i] = all[i][:j] + prev + all[i][j+64:]
		}
		k := strings.LastIndex(all[i], `,"hash":"`)
		prev := all[i][strings.Index(all[i], `"prev":"`)+len(`"prev":"`):][:64]
		sum := sha256.Sum256([]byte(prev + all[i][:k] + "}"))
		all[i] = all[i][:k] + `,"hash":"` + hex.EncodeToString(sum[:]) + `"}`
	}
	for i, s := range segs {
		if err := os.WriteFile(s, []byte(strings.Join(all[:counts[i]], "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		all = all[counts[i]:]
	}
}
