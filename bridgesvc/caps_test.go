package bridgesvc_test

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	bridgev1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/bridge/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"

	"github.com/gatehouse-mcp/gatehouse/bridgesvc"
)

// sendAs sends msg on a session as a principal of a tenant.
func (b *bridge) sendAs(t *testing.T, session, tenant, principal, msg string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := &bridgev1.SendRequest{SessionId: session, Server: "fake", Message: []byte(msg), Tenant: tenant, Principal: principal}
	stream, err := b.client.Send(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
	}
	return stream.Err()
}

// TestChildCapsFollowTheCaller: the principal and tenant a Send names are what its stdio child
// counts against.
func TestChildCapsFollowTheCaller(t *testing.T) {
	t.Parallel()
	b := newBridge(t, bridgesvc.Config{MaxChildren: 8, MaxChildrenPerTenant: 2, MaxChildrenPerPrincipal: 1}, static(helperServer(t, "fake", "server")))
	echo := toolCall(1, "echo", `{"text":"hi"}`)
	tests := []struct {
		session, tenant, principal string
		code                       connect.Code // 0: it starts
		msg                        string
	}{
		{session: "s1", tenant: "t1", principal: "alice"},
		{session: "s2", tenant: "t1", principal: "alice", code: connect.CodeResourceExhausted, msg: "per-principal cap"},
		{session: "s3", tenant: "t1", principal: "bob"},
		{session: "s4", tenant: "t1", principal: "carol", code: connect.CodeResourceExhausted, msg: "per-tenant cap"},
		{session: "s5", tenant: "t2", principal: "carol"},
		{session: "s6", tenant: "t2", principal: "alice"},
		{session: "s7", tenant: "t3", principal: "bad id", code: connect.CodeInvalidArgument, msg: "principal"},
		{session: "s8", tenant: strings.Repeat("t", 200), principal: "dave", code: connect.CodeInvalidArgument, msg: "tenant"},
	}
	for _, tc := range tests {
		err := b.sendAs(t, tc.session, tc.tenant, tc.principal, echo)
		if tc.code == 0 {
			if err != nil {
				t.Fatalf("%s as %s/%s: %v", tc.session, tc.tenant, tc.principal, err)
			}
			continue
		}
		wantCode(t, err, tc.code, tc.msg)
	}
	// Ending alice's session in t1 gives her place back.
	b.endSession(t, "s1")
	if err := b.sendAs(t, "s9", "t1", "alice", echo); err != nil {
		t.Fatalf("after her session ended, alice: %v", err)
	}
}

func TestChildCapsConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  bridgesvc.Config
		err  string
	}{
		{name: "defaults lowered to a small global cap", cfg: bridgesvc.Config{MaxChildren: 1}},
		{name: "defaults", cfg: bridgesvc.Config{}},
		{name: "tenant over global", cfg: bridgesvc.Config{MaxChildren: 10, MaxChildrenPerTenant: 11}, err: "max-children-per-tenant"},
		{name: "principal over tenant", cfg: bridgesvc.Config{MaxChildrenPerTenant: 4, MaxChildrenPerPrincipal: 5}, err: "max-children-per-principal"},
		{name: "negative", cfg: bridgesvc.Config{MaxChildrenPerPrincipal: -1}, err: "max-children-per-principal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := bridgesvc.New(tc.cfg, static(), quietLogger())
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				_ = svc.Close(context.Background())
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("New = %v, want an error naming %s", err, tc.err)
			}
		})
	}
}

func TestStateDirIsExclusive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	newBridge(t, bridgesvc.Config{StateDir: dir}, static())
	if _, err := bridgesvc.New(bridgesvc.Config{StateDir: dir}, static(), quietLogger()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second bridge on the state dir: %v, want in use", err)
	}
}

func TestCapFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg bridgesvc.Config
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-max-children-per-principal", "3"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"GATEHOUSE_BRIDGE_MAX_CHILDREN_PER_PRINCIPAL": "9",
		"GATEHOUSE_BRIDGE_MAX_CHILDREN_PER_TENANT":    "5",
		"GATEHOUSE_BRIDGE_STATE_DIR":                  "/var/lib/gatehouse/bridge",
	}
	if err := svcmain.ApplyEnv(fs, "GATEHOUSE_BRIDGE_", func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxChildrenPerPrincipal != 3 || cfg.MaxChildrenPerTenant != 5 || cfg.MaxChildren != bridgesvc.DefaultMaxChildren || cfg.StateDir != "/var/lib/gatehouse/bridge" {
		t.Fatalf("config = %+v", cfg)
	}
	// The flags' defaults are a valid configuration.
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	var defaults bridgesvc.Config
	defaults.RegisterFlags(fs)
	if defaults.MaxChildrenPerPrincipal != bridgesvc.DefaultMaxChildrenPerPrincipal || defaults.MaxChildrenPerTenant != bridgesvc.DefaultMaxChildrenPerTenant {
		t.Fatalf("defaults = %+v", defaults)
	}
	svc, err := bridgesvc.New(defaults, static(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	_ = svc.Close(context.Background())
}
