package pgcluster_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/pgcluster"
	"github.com/jackc/pgx/v5"
)

// TestFsyncOption: a cluster made for a benchmark keeps fsync on, one made for tests turns
// it off; the server says which.
func TestFsyncOption(t *testing.T) {
	if _, err := pgcluster.Bin(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	for _, fsync := range []bool{true, false} {
		c, err := pgcluster.Init(pgcluster.Options{Fsync: fsync})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Remove() })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if c.PID() == 0 {
			t.Fatal("no postmaster pid")
		}
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = conn.QueryRow(ctx, "SHOW fsync").Scan(&got)
		_ = conn.Close(ctx)
		if want := map[bool]string{true: "on", false: "off"}[fsync]; err != nil || got != want {
			t.Errorf("Fsync %v: SHOW fsync = %q, %v; want %q", fsync, got, err, want)
		}
		if err := c.Stop(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if c.PID() != 0 {
			t.Error("a stopped cluster has a pid")
		}
	}
}
