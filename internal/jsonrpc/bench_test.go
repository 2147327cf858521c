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

// BenchmarkSlowShapes scans each slow shape at the 4 MiB body limit with both entry points and
// reports the cost per byte, the bound on how long one hostile body can hold a core.
func BenchmarkSlowShapes(b *testing.B) {
	for _, s := range slowShapes(bodyLimit) {
		for _, edge := range []string{"strict", "routing"} {
			b.Run(s.name+"/"+edge, func(b *testing.B) {
				b.SetBytes(int64(len(s.body)))
				for b.Loop() {
					var err error
					if edge == "strict" {
						_, _, err = jsonrpc.Parse(s.body, true)
					} else {
						_, err = jsonrpc.Split(s.body)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(s.body)), "ns/byte")
			})
		}
	}
}

// BenchmarkPeek is the routing entry point on a typical upstream result (about 48 KiB of text).
func BenchmarkPeek(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"` + strings.Repeat("lorem ipsum ", 4096) + `"}],"structuredContent":{"a":[1,2,3],"b":{"c":true}}}}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jsonrpc.Peek(msg); err != nil {
			b.Fatal(err)
		}
	}
}
