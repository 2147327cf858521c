package ingress

import (
	"strconv"
	"strings"
	"testing"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

func TestSplice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, obj, key, value, want, wantErr string
	}{
		{name: "string", obj: `{"a":1,"name":"x","b":[1,{"name":"y"}]}`, key: "name", value: `"p__x"`, want: `{"a":1,"name":"p__x","b":[1,{"name":"y"}]}`},
		{name: "whitespace kept", obj: "{ \"id\" :\t7 , \"m\":\"z\" }", key: "id", value: `"s:7"`, want: "{ \"id\" :\t\"s:7\" , \"m\":\"z\" }"},
		{name: "number last", obj: `{"m":"z","id":12}`, key: "id", value: `"s:12"`, want: `{"m":"z","id":"s:12"}`},
		{name: "object value", obj: `{"params":{"name":"a","arguments":{"k":"<&>"}}}`, key: "params", value: `{}`, want: `{"params":{}}`},
		{name: "nested key not taken", obj: `{"b":{"name":"y"}}`, key: "name", value: `"z"`, wantErr: "no such member"},
		{name: "not an object", obj: `[1]`, key: "name", value: `"z"`, wantErr: "not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := splice([]byte(tt.obj), tt.key, []byte(tt.value))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestRenameKeepsArgumentBytes(t *testing.T) {
	t.Parallel()
	raw := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"srv__echo","arguments":{"text":"a<b & \u00e9"}}}`
	msgs, _, err := jsonrpc.Parse([]byte(raw), false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := renameParam(msgs[0], "name", "echo")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(raw, "srv__echo", "echo", 1)
	if string(m.Raw) != want || m.Name != "echo" || string(m.Arguments) != `{"text":"a<b & \u00e9"}` {
		t.Fatalf("renamed %s (name %q, arguments %s), want %s", m.Raw, m.Name, m.Arguments, want)
	}
}

func TestRoute(t *testing.T) {
	t.Parallel()
	none := ""
	own := "x"
	servers := []*registryv1.Server{{Name: "a"}, {Name: "b", Prefix: &own}, {Name: "c", Prefix: &none}}
	tests := []struct{ name, server, own string }{
		{"a__t", "a", "t"},
		{"x__t", "b", "t"},
		{"b__t", "c", "b__t"}, // b's prefix is x: the name is the bare server's
		{"t", "c", "t"},
		{"a__", "", ""}, // claimed by a's prefix, and no tool
	}
	for _, tt := range tests {
		srv, name, ok := route(servers, tt.name)
		if got := srv.GetName(); got != tt.server || name != tt.own || ok != (tt.server != "") {
			t.Errorf("route(%q) = %q %q %v, want %q %q", tt.name, got, name, ok, tt.server, tt.own)
		}
	}
}

func TestCursorSealed(t *testing.T) {
	t.Parallel()
	s := &Service{}
	key := strings.Repeat("ab", 32)
	lc := listCursor{Method: "tools/list", Left: []listPos{{Server: "a", Cursor: "c1", Skip: 3}, {Server: "b"}}}
	cur, err := s.sealCursor("session-1", key, lc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.openCursor("session-1", key, cur)
	if err != nil || got.Method != lc.Method || len(got.Left) != 2 || got.Left[0] != lc.Left[0] {
		t.Fatalf("opened %+v (%v), want %+v", got, err, lc)
	}
	for name, bad := range map[string][2]string{
		"other session": {"session-2", cur},
		"other key":     {"session-1", cur},
		"altered":       {"session-1", "f" + cur[1:]}, // base64 of `{"m"` begins with e
		"no mac":        {"session-1", cur[:strings.LastIndexByte(cur, '.')]},
		"garbage":       {"session-1", "%%%.zz"},
	} {
		k := key
		if name == "other key" {
			k = strings.Repeat("cd", 32)
		}
		if _, err := s.openCursor(bad[0], k, bad[1]); err == nil {
			t.Errorf("%s: cursor accepted", name)
		}
	}
}

func TestTagRequest(t *testing.T) {
	t.Parallel()
	req := []byte(`{"jsonrpc":"2.0","id":"s-1","method":"sampling/createMessage","params":{}}`)
	tagged, err := tagRequest(req, "srv")
	if err != nil || !strings.Contains(string(tagged), `"id":"srv:\"s-1\""`) {
		t.Fatalf("tagged %s (%v)", tagged, err)
	}
	resp := []byte(`{"jsonrpc":"2.0","id":"srv:\"s-1\"","result":{}}`)
	msgs, _, err := jsonrpc.Parse(resp, false)
	if err != nil {
		t.Fatal(err)
	}
	server, back, ok := untagResponse(msgs[0])
	if !ok || server != "srv" || string(back.ID) != `"s-1"` {
		t.Fatalf("untagged %q %v %v", server, back, ok)
	}
	note := []byte(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`)
	if out, err := tagRequest(note, "srv"); err != nil || string(out) != string(note) {
		t.Fatalf("a notification was changed: %s", out)
	}
}

func TestResourceIndex(t *testing.T) {
	t.Parallel()
	servers := []*registryv1.Server{{Name: "a"}, {Name: "b"}}
	var ix resourceIndex
	ix.note("s1", "file:///x", "b", servers)
	ix.note("s1", "file:///x", "a", servers) // earlier in config order: it takes the URI
	ix.note("s1", "file:///x", "b", servers) // a later server never takes it back
	if got, _ := ix.lookup("s1", "file:///x"); got != "a" {
		t.Fatalf("file:///x routed to %q, want a", got)
	}
	ix.note("s1", "file:///"+strings.Repeat("y", 2000), "a", servers)
	if _, ok := ix.lookup("s1", "file:///"+strings.Repeat("y", 2000)); ok {
		t.Fatal("a URI over MaxName was indexed")
	}
	for i := range maxIndexedSessions + 10 {
		ix.note("other"+strings.Repeat("-", i%3)+string(rune('A'+i%26))+itoa(i), "u", "a", servers)
	}
	if n := len(ix.sessions); n > maxIndexedSessions {
		t.Fatalf("%d sessions indexed, over %d", n, maxIndexedSessions)
	}
	ix.forget("s1")
	if _, ok := ix.lookup("s1", "file:///x"); ok {
		t.Fatal("a forgotten session still routes")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
