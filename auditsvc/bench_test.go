package auditsvc_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// BenchmarkAppendParallel measures durable appends from many callers: group commit turns
// them into far fewer fsyncs.
func BenchmarkAppendParallel(b *testing.B) {
	svc, err := auditsvc.New(auditsvc.Config{Dir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close(context.Background()) })
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := connect.NewRequest(&auditv1.AppendRequest{Record: record(1)})
			if _, err := svc.Append(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
