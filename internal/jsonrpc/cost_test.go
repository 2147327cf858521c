package jsonrpc_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// bodyLimit is the ingress's default body limit (--max-body-bytes).
const bodyLimit = 4 << 20

// shape is a body built to be slow to scan, as large as the limit allows.
type shape struct {
	name  string
	body  []byte
	batch bool
}

// call wraps arguments (a JSON value) in a tools/call request.
func call(arguments string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":` + arguments + `}}`
}

// objects returns an array of objects holding members keys in all, at most MaxObjectKeys a
// object, each key made by key(i), each value 0.
func objects(members int, key func(i int) string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range members {
		switch {
		case i == 0:
			b.WriteByte('{')
		case i%jsonrpc.MaxObjectKeys == 0:
			b.WriteString("},{")
		default:
			b.WriteByte(',')
		}
		b.WriteString(`"` + key(i) + `":0`)
	}
	b.WriteString("}]")
	return b.String()
}

// slowShapes returns the bodies that would be slow to a scanner whose cost grows faster than
// its input: most keys per object and per message, escaped and Unicode-folded keys, long keys
// with a common prefix, deep nesting, long strings, many values, many batch members.
func slowShapes(limit int) []shape {
	const room = jsonrpc.MaxMembers - 16 // the envelope's own members
	pad := func(n int) string { return strings.Repeat("p", max(0, n)) }
	perKey := limit / room // bytes one member may take
	// Nested objects alternate with arrays; each key is long enough to keep the members
	// under MaxMembers while the nesting fills the body.
	deep := strings.Repeat(`{"`+pad(perKey)+`":[`, jsonrpc.MaxDepth/2-3) + "0" + strings.Repeat("]}", jsonrpc.MaxDepth/2-3)
	var deeps []string
	for (len(deeps)+1)*(len(deep)+1) < limit-len(call("[]")) {
		deeps = append(deeps, deep)
	}
	var batch []string
	each := limit / jsonrpc.MaxBatch
	for i := range jsonrpc.MaxBatch {
		args := objects(room/jsonrpc.MaxBatch-8, func(j int) string { return fmt.Sprintf("%07d", j) + pad(each/(room/jsonrpc.MaxBatch)-14) })
		batch = append(batch, strings.Replace(call(args), `"id":1`, fmt.Sprintf(`"id":%d`, i), 1))
	}
	shapes := []shape{
		{name: "most keys", body: []byte(call(objects(room, func(i int) string { return fmt.Sprintf("k%d", i) + pad(perKey-14) })))},
		{name: "escaped keys", body: []byte(call(objects(room, func(i int) string {
			return fmt.Sprintf(`\u006b%d`, i) + strings.Repeat(`\u0070`, max(0, (perKey-20)/6))
		})))},
		{name: "unicode-folded keys", body: []byte(call(objects(room, func(i int) string { return fmt.Sprintf("ſ%d", i) + strings.Repeat("K", max(0, (perKey-16)/3)) })))},
		{name: "long keys with a common prefix", body: []byte(call(objects(limit/(64<<10), func(i int) string { return pad(64<<10-32) + fmt.Sprint(i) })))},
		{name: "deep nesting", body: []byte(call("[" + strings.Join(deeps, ",") + "]"))},
		{name: "long plain string", body: []byte(call(`{"text":"` + strings.Repeat("lorem ipsum ", (limit-200)/12) + `"}`))},
		{name: "long escaped and non-ASCII string", body: []byte(call(`{"text":"` + strings.Repeat(`\n\u00e9é€😀\"`, (limit-200)/25) + `"}`))},
		{name: "many values", body: []byte(call("[" + strings.Repeat("0,", (limit-200)/2) + "0]"))},
		{name: "most batch members", body: []byte("[" + strings.Join(batch, ",") + "]"), batch: true},
	}
	for _, s := range shapes {
		if len(s.body) > limit {
			panic(fmt.Sprintf("shape %q is %d bytes, over %d", s.name, len(s.body), limit))
		}
	}
	return shapes
}

// TestScanCost bounds the work of one scan of each slow shape at the body limit by counting
// it, never by timing it: every byte is scanned once, each key costs a bounded number of set
// probes (a set, not pairwise comparison), and everything else the codec does is a constant
// multiple of the body's length.
func TestScanCost(t *testing.T) {
	t.Parallel()
	for _, s := range slowShapes(bodyLimit) {
		for _, strict := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/strict=%v", s.name, strict), func(t *testing.T) {
				t.Parallel()
				w, err := jsonrpc.ScanWork(s.body, strict)
				if err != nil {
					t.Fatalf("a body within every limit refused: %v", err)
				}
				n := len(s.body)
				t.Logf("%d bytes: %+v", n, w)
				if w.Scanned != n {
					t.Errorf("scanned %d bytes of %d", w.Scanned, n)
				}
				if w.Keys > jsonrpc.MaxMembers {
					t.Errorf("%d keys, over MaxMembers", w.Keys)
				}
				if w.Probes > 4*w.Keys+64 { // about 1.3: an insert at most half load, and the moves of growth
					t.Errorf("%d set probes for %d keys", w.Probes, w.Keys)
				}
				if w.KeyBytes > 2*n || w.Verified > 0 || w.Decoded > n {
					t.Errorf("key bytes %d, verified %d, decoded %d for %d bytes", w.KeyBytes, w.Verified, w.Decoded, n)
				}
				if total := w.Scanned + w.KeyBytes + w.Verified + w.Decoded + w.Probes; total > 4*n {
					t.Errorf("%d units of work for %d bytes", total, n)
				}
			})
		}
	}
}

// TestDuplicateVerified checks the other half of the set: keys that fold alike are found
// whatever their spelling, with the match confirmed on the keys' bytes.
func TestDuplicateVerified(t *testing.T) {
	t.Parallel()
	for _, pair := range [][2]string{{"k", "K"}, {"k", `\u212a`}, {"s", "ſ"}, {"ab", `a\u0042`}, {strings.Repeat("x", 5000), strings.Repeat("X", 5000)}} {
		body := call(`{"a":0,"` + pair[0] + `":1,"b":2,"` + pair[1] + `":3}`)
		w, err := jsonrpc.ScanWork([]byte(body), true)
		if err == nil || jsonrpc.AsError(err).Code != jsonrpc.CodeInvalidRequest || !strings.Contains(err.Error(), "duplicate") {
			t.Errorf("%s and %s: err %v, want a duplicate key", pair[0], pair[1], err)
		}
		if w.Verified == 0 {
			t.Errorf("%s and %s: refused without comparing the keys", pair[0], pair[1])
		}
	}
}

// TestDuplicateAfterNestedObjects puts a duplicate of an outer key after inner objects whose
// keys grew the set and then closed: the set must still find each outer key.
func TestDuplicateAfterNestedObjects(t *testing.T) {
	t.Parallel()
	inner := objects(jsonrpc.MaxObjectKeys, func(i int) string { return fmt.Sprintf("i%d", i) })
	for _, n := range []int{1, 40, 3000} {
		outer := objects(n, func(i int) string { return fmt.Sprintf("o%d", i) })
		outer = strings.TrimSuffix(strings.TrimPrefix(outer, "[{"), "}]")
		for i := 0; i < n; i += max(1, n/300) {
			dup := fmt.Sprintf("O%d", i)
			body := call(`{` + outer + `,"inner":` + inner + `,"` + dup + `":1}`)
			_, _, err := jsonrpc.Parse([]byte(body), false)
			if err == nil || !strings.Contains(err.Error(), `duplicate or case-variant key "`+dup+`"`) {
				t.Fatalf("%d outer keys: err %v, want the duplicate %s", n, err, dup)
			}
		}
	}
}
