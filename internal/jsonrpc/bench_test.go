package jsonrpc_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

func benchmarkParse(b *testing.B, text int) {
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", text) + `"},"_meta":{"progressToken":7}}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := jsonrpc.Parse(body, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse64B(b *testing.B)   { benchmarkParse(b, 64) }
func BenchmarkParse16KiB(b *testing.B) { benchmarkParse(b, 16<<10) }
