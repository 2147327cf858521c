package tests

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

// initTally is how a burst of concurrent initializes was answered.
type initTally struct {
	granted []string // session ids
	refused int      // 503 with Retry-After, JSON-RPC -32007 and no session
	other   []string // anything else, described
}

// initializeBurst sends n initializes to url with token at once and sorts the answers.
func initializeBurst(t *testing.T, url, token string, n int) initTally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), gatehousetest.ClientTimeout)
	defer cancel()
	// A transport of its own, so that the burst opens its connections together.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = n
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: gatehousetest.ClientTimeout}
	var (
		mu    sync.Mutex
		tally initTally
		wg    sync.WaitGroup
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := postRaw(ctx, client, url, token, initBody, nil)
			mu.Lock()
			defer mu.Unlock()
			sid := r.header.Get("Mcp-Session-Id")
			code, _, _ := r.rpcError()
			switch {
			case err != nil:
				tally.other = append(tally.other, err.Error())
			case r.status == http.StatusOK && sid != "":
				tally.granted = append(tally.granted, sid)
			case r.status == http.StatusServiceUnavailable && r.header.Get("Retry-After") != "" && code == -32007 && sid == "":
				tally.refused++
			default:
				tally.other = append(tally.other, fmt.Sprintf("%d Retry-After=%q session=%q %s", r.status, r.header.Get("Retry-After"), sid, r.body))
			}
		}()
	}
	close(start)
	wg.Wait()
	return tally
}

// TestSessionCapRace: 150 concurrent initializes by one principal under a cap of 64 get
// exactly 64 sessions; the others are refused with 503, Retry-After and -32007.
func TestSessionCapRace(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	addr := gatehousetest.StartServer(t, func(addr string) []string { return []string{echo, "-http", addr} })
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + httpEntry("echo", "http://"+addr+"/mcp"),
		Args:   []string{"--max-sessions-per-principal", "64"},
	})
	const attempts, limit = 150, 64
	tally := initializeBurst(t, g.Endpoint("echo"), g.Token, attempts)
	if len(tally.other) > 0 {
		t.Fatalf("%d of %d initializes answered neither a session nor the cap's refusal, the first: %s", len(tally.other), attempts, strings.Join(tally.other[:min(len(tally.other), 3)], "; "))
	}
	if len(tally.granted) != limit || tally.refused != attempts-limit {
		t.Fatalf("%d sessions granted and %d refused of %d concurrent initializes, want exactly %d granted", len(tally.granted), tally.refused, attempts, limit)
	}
	// The sessions granted are real and distinct.
	seen := map[string]bool{}
	for _, sid := range tally.granted {
		if seen[sid] {
			t.Fatalf("session id %s granted twice", sid)
		}
		seen[sid] = true
	}
	c := rawClient{t: t, url: g.Endpoint("echo"), token: g.Token}
	if r := c.post(echoCall, session(tally.granted[0])); r.status != http.StatusOK || !strings.Contains(string(r.body), "still serving") {
		t.Fatalf("tools/call on a granted session: %d %s", r.status, r.body)
	}
}

// TestStdioChildCaps: stdio children are capped per principal and per tenant below the
// bridge's global cap, so one principal (or one tenant) at its cap locks nobody else out.
// dev's burst of initializes gets exactly its 3 children; alice, of dev's tenant, gets the 2
// left of the tenant's 5 and no more, though under her own cap; bob, of another tenant, still
// gets his 3.
func TestStdioChildCaps(t *testing.T) {
	t.Parallel()
	echo := gatehousetest.Bin(t, gatehousetest.EchoServer)
	g := gatehousetest.Start(t, gatehousetest.Options{
		Config: "servers:\n" + stdioEntryFor("echo", []string{"default", "research"}, echo),
		Args: []string{"--max-children-per-principal", "3", "--max-children-per-tenant", "5",
			"--max-sessions-per-principal", "20"},
	})
	alice := g.NewToken(t, "alice", "default")
	bob := g.NewToken(t, "bob", "research")
	children := func() int { return len(gatehousetest.ChildrenRunning(g.Pid(), echo)) }

	if tally := initializeBurst(t, g.Endpoint("echo"), g.Token, 8); len(tally.granted) != 3 || tally.refused != 5 || len(tally.other) > 0 {
		t.Fatalf("dev's 8 concurrent initializes: %d granted, %d refused, others %v; want 3 granted (its cap) and 5 refused", len(tally.granted), tally.refused, tally.other)
	}
	if n := children(); n != 3 {
		t.Fatalf("%d stdio children after dev reached its cap of 3", n)
	}
	// alice: 3 asked, 2 left in the tenant.
	if tally := initializeBurst(t, g.Endpoint("echo"), alice, 3); len(tally.granted) != 2 || tally.refused != 1 || len(tally.other) > 0 {
		t.Fatalf("alice's 3 initializes with dev at its cap: %d granted, %d refused, others %v; want 2 granted (the tenant's cap of 5) and 1 refused", len(tally.granted), tally.refused, tally.other)
	}
	if tally := initializeBurst(t, g.Endpoint("echo"), bob, 3); len(tally.granted) != 3 || tally.refused != 0 || len(tally.other) > 0 {
		t.Fatalf("bob's 3 initializes with tenant default at its cap: %d granted, %d refused, others %v; want all 3 granted", len(tally.granted), tally.refused, tally.other)
	}
	if n := children(); n != 8 {
		t.Fatalf("%d stdio children, want 8 (dev 3, alice 2, bob 3)", n)
	}
}
