package jsonrpc_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// seeds start both fuzz targets: well-formed messages of each kind, and the shapes that broke
// earlier scanners (case-variant members, escaped and Unicode-folded keys, lone surrogates).
var seeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"progressToken":"t"}}}`,
	`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]`,
	`{"jsonrpc":"2.0","id":"x","result":{"a":[1,2,{"b":null}],"protocolVersion":"2025-06-18"}}`,
	`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5}}`,
	`{"jsonrpc":"2.0","id":-0.5e10,"error":{"code":1}}`,
	`{"jsonrpc":"2.0","method":"a","METHOD":"b"}`, // FuzzPeek's counterexample
	`{"jsonrpc":"2.0","id":1,"result":{},"Method":"b"}`,
	`{"jsonrpc":"2.0","method":"a","paramſ":{"name":"b"}}`,
	`{"a":1,"A":2}`, `{"\u0061":1,"a":2}`, `{"k":1,"\u212a":2}`, `{"K":1,"k":2}`,
	`[1,2.5e-3,-0,true,false,null,"\u00e9\n",{"a":[]}]`, `"x"`, `-`, `01`, `1.`, `{"a" 1}`,
	`{"a":"\ud800"}`, "{\"a\":\"\x01\"}", `{"a":`,
}

// fields is what encoding/json reads of the members the codec reads.
type fields struct {
	ID     json.RawMessage `json:"id"`
	Method json.RawMessage `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

type params struct {
	Name      json.RawMessage `json:"name"`
	URI       json.RawMessage `json:"uri"`
	Arguments json.RawMessage `json:"arguments"`
	Version   json.RawMessage `json:"protocolVersion"`
	Token     json.RawMessage `json:"progressToken"`
	Meta      json.RawMessage `json:"_meta"`
}

// object decodes raw into v when raw is an object; encoding/json matches names as a peer would.
func object(t *testing.T, raw []byte, v any) bool {
	if len(raw) == 0 || raw[0] != '{' {
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("encoding/json cannot decode an accepted object %s: %v", raw, err)
	}
	return true
}

func str(raw []byte) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// agree fails unless what the codec read of m is what encoding/json reads of the same bytes.
func agree(t *testing.T, m *jsonrpc.Message) {
	t.Helper()
	var f fields
	object(t, m.Raw, &f)
	var p, meta params
	object(t, f.Params, &p)
	object(t, p.Meta, &meta)
	var r params
	object(t, f.Result, &r)
	if m.Method != str(f.Method) || !bytes.Equal(m.ID, f.ID) {
		t.Fatalf("read method %q id %s; encoding/json reads %s %s", m.Method, m.ID, f.Method, f.ID)
	}
	var token, version, name []byte
	switch {
	case m.Kind == jsonrpc.KindResponse:
		version = r.Version
		if m.IsError != (f.Error != nil) {
			t.Fatalf("IsError %v; encoding/json reads error %s", m.IsError, f.Error)
		}
	case m.Kind == jsonrpc.KindRequest:
		token = meta.Token
		switch m.Method {
		case "tools/call", "prompts/get":
			name = p.Name
			if !bytes.Equal(m.Arguments, p.Arguments) {
				t.Fatalf("read arguments %s; encoding/json reads %s", m.Arguments, p.Arguments)
			}
		case "resources/read":
			name = p.URI
		case "initialize":
			version = p.Version
		}
	case m.Method == "notifications/progress":
		token = p.Token
	}
	if m.Kind != jsonrpc.KindResponse && !bytes.Equal(m.Meta, p.Meta) {
		t.Fatalf("read _meta %s; encoding/json reads %s", m.Meta, p.Meta)
	}
	if !bytes.Equal(m.ProgressToken, token) || m.ProtocolVersion != str(version) || m.Name != str(name) {
		t.Fatalf("read token %s version %q name %q; encoding/json reads %s %s %s", m.ProgressToken, m.ProtocolVersion, m.Name, token, version, name)
	}
}

// foldDuplicate is the slow oracle for the duplicate-key rule: whether any object in body has
// two keys that bytes.EqualFold (encoding/json's matching) holds equal.
func foldDuplicate(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	var stack [][]string // keys per open object; nil for arrays
	var inObject []bool
	expectKey := func() bool { return len(inObject) > 0 && inObject[len(inObject)-1] }
	keyNext := true
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) || err != nil {
			return false
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack, inObject = append(stack, nil), append(inObject, true)
				keyNext = true
				continue
			case '[':
				stack, inObject = append(stack, nil), append(inObject, false)
			case '}', ']':
				stack, inObject = stack[:len(stack)-1], inObject[:len(inObject)-1]
			}
		case string:
			if expectKey() && keyNext {
				keys := stack[len(stack)-1]
				for _, k := range keys {
					if bytes.EqualFold([]byte(k), []byte(v)) {
						return true
					}
				}
				stack[len(stack)-1] = append(keys, v)
				keyNext = false
				continue
			}
		}
		keyNext = expectKey()
	}
}

// differential checks one body against encoding/json: the grammar agrees, the duplicate-key
// rule agrees with the slow oracle, and what each accepted message reads is what encoding/json
// reads.
func differential(t *testing.T, body []byte, msgs []*jsonrpc.Message, err error) {
	t.Helper()
	if !utf8.Valid(body) {
		if err == nil {
			t.Fatalf("accepted invalid UTF-8: %q", body)
		}
		return
	}
	valid := json.Valid(body)
	if err == nil && !valid {
		t.Fatalf("accepted what encoding/json rejects: %q", body)
	}
	var e *jsonrpc.Error
	if !errors.As(err, &e) && err != nil {
		t.Fatalf("error is no *jsonrpc.Error: %v", err)
	}
	if err != nil && valid && e.Code == jsonrpc.CodeParseError {
		t.Fatalf("valid JSON refused as a parse error (%v): %q", err, body)
	}
	if !valid {
		return
	}
	dup := foldDuplicate(body)
	if err == nil && dup {
		t.Fatalf("accepted a body with keys that fold alike: %q", body)
	}
	if err != nil && strings.HasPrefix(e.Message, "duplicate or case-variant key") && !dup {
		t.Fatalf("refused as a duplicate (%v) a body without one: %q", err, body)
	}
	for _, m := range msgs {
		agree(t, m)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, _, err := jsonrpc.Parse(body, true)
		if err != nil && jsonrpc.AsError(err).Code == 0 {
			t.Fatalf("error without a code: %v", err)
		}
		for _, m := range msgs {
			if m.Kind == 0 {
				t.Fatalf("message without a kind")
			}
		}
		differential(t, body, msgs, err)
	})
}

// FuzzPeek is the same differential for the routing entry point (Split, and Peek on bodies
// that are one message).
func FuzzPeek(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		split, err := jsonrpc.Split(body)
		if err != nil && !errors.Is(err, jsonrpc.ErrInvalidMessage) {
			t.Fatalf("error does not wrap ErrInvalidMessage: %v", err)
		}
		msgs := make([]*jsonrpc.Message, len(split))
		for i := range split {
			msgs[i] = &split[i]
		}
		differential(t, body, msgs, err)
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
			m, perr := jsonrpc.Peek(body)
			if (perr == nil) != (err == nil) || err == nil && !bytes.Equal(m.Raw, split[0].Raw) {
				t.Fatalf("Peek = %v, Split = %v", perr, err)
			}
		}
	})
}

// TestDuplicateRandom runs the duplicate-key rule against the slow oracle on bodies large
// enough to grow the set several times and close objects in its middle: nested objects of up
// to 300 keys, some with one key repeated in another case.
func TestDuplicateRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var obj func(b *strings.Builder, depth int)
	obj = func(b *strings.Builder, depth int) {
		n := rng.IntN(300)
		dup := -1
		if rng.IntN(3) == 0 && n > 0 {
			dup = rng.IntN(n)
		}
		b.WriteByte('{')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(b, `"k%d":`, i)
			if depth < 4 && rng.IntN(40) == 0 {
				obj(b, depth+1)
			} else {
				b.WriteByte('0')
			}
			if i == n-1 && dup >= 0 {
				fmt.Fprintf(b, `,"K%d":1`, dup)
			}
		}
		b.WriteByte('}')
	}
	dups := 0
	for range 150 {
		var b strings.Builder
		b.WriteString(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":`)
		obj(&b, 0)
		b.WriteString(`}}`)
		body := []byte(b.String())
		_, _, err := jsonrpc.Parse(body, false)
		found := err != nil && strings.Contains(err.Error(), "duplicate or case-variant key")
		if err != nil && !found {
			t.Fatalf("unexpected error %v", err)
		}
		if want := foldDuplicate(body); found != want {
			t.Fatalf("duplicate found %v, oracle %v (err %v) in %s", found, want, err, body)
		}
		if found {
			dups++
		}
	}
	if dups == 0 || dups == 150 {
		t.Fatalf("%d of 150 bodies with a duplicate: the generator tests one side only", dups)
	}
}
