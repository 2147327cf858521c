package tests

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
	"github.com/gatehouse-mcp/gatehouse/tests/internal/nodepeer"
)

// TestConformanceThroughGateway runs the official conformance suite (server scenarios) against
// the gateway in front of the Go SDK conformance server (Streamable HTTP, stateful). The suite
// sends no token, so the server is opened to anonymous access, as an operator would for it.
// Every check is reported by name; the test fails on any FAILURE and unless all 40 checks
// of the active suite passed.
func TestConformanceThroughGateway(t *testing.T) {
	nodepeer.Node22(t)
	ev := gatehousetest.Bin(t, gatehousetest.EverythingGoSDK)
	addr := gatehousetest.StartServer(t, func(addr string) []string { return []string{ev, "-http=" + addr, "-stateless=false"} })
	cfg := "servers:\n" + httpEntry("conformance", "http://"+addr+"/mcp") +
		"anonymous:\n  servers: [conformance]\n  principal: conformance-suite\n  tenant: default\n"
	g := gatehousetest.Start(t, gatehousetest.Options{Config: cfg})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := nodepeer.RunConformance(t, ctx, g.Endpoint("conformance"))
	if err != nil {
		t.Fatalf("conformance suite: %v\ngateway log:\n%s", err, g.Logs())
	}
	passed, failed := 0, 0
	for _, c := range res.Checks {
		switch c.Status {
		case nodepeer.StatusFailure:
			failed++
			t.Logf("FAILED  %s: %s", c.ID, c.ErrorMessage)
		case nodepeer.StatusSuccess:
			passed++
			t.Logf("passed  %s", c.ID)
		default:
			t.Logf("%-7s %s: %s", c.Status, c.ID, c.ErrorMessage)
		}
	}
	t.Logf("conformance through the gateway: %d passed, %d failed, of %d checks", passed, failed, len(res.Checks))
	// Any failed check fails the test, listed or not; and every listed check must have run
	// and passed, so the suite cannot pass by running less.
	for _, p := range res.Problems(nodepeer.ActiveServerChecks) {
		t.Error(p)
	}
	if t.Failed() {
		t.Logf("gateway log:\n%s", g.Logs())
	}
}
