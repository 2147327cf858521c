package nodepeer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadChecks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if body != "" {
			if err := os.WriteFile(filepath.Join(dir, name, "checks.json"), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Written out of order on purpose: results are ordered by the timestamp in the name.
	write("server-ping-2026-01-02T03-04-05-200Z", `[{"id":"ping","name":"Ping","status":"SUCCESS"}]`)
	write("server-dns-rebinding-protection-2026-01-02T03-04-05-100Z",
		`[{"id":"localhost-host-rebinding-rejected","status":"FAILURE","errorMessage":"Expected HTTP 4xx","details":{"statusCode":200}},
		  {"id":"localhost-host-valid-accepted","status":"SUCCESS"}]`)
	write("server-tools-list-2026-01-02T03-04-05-300Z", "") // crashed: no checks.json
	write("unrelated", "")
	stdout := strings.Join([]string{
		"Running client scenario 'dns-rebinding-protection' against server: http://127.0.0.1:1/mcp",
		"Running client scenario 'ping' against server: http://127.0.0.1:1/mcp",
		"Running client scenario 'tools-list' against server: http://127.0.0.1:1/mcp",
	}, "\n")

	checks, err := readChecks(dir, stdout)
	if err != nil {
		t.Fatal(err)
	}
	res := Result{Checks: checks}
	want := []struct {
		scenario, id string
		status       Status
	}{
		{"dns-rebinding-protection", "localhost-host-rebinding-rejected", StatusFailure},
		{"dns-rebinding-protection", "localhost-host-valid-accepted", StatusSuccess},
		{"ping", "ping", StatusSuccess},
		{"tools-list", "tools-list", StatusFailure},
	}
	if len(checks) != len(want) {
		t.Fatalf("got %d checks: %+v", len(checks), checks)
	}
	for i, w := range want {
		if c := checks[i]; c.Scenario != w.scenario || c.ID != w.id || c.Status != w.status {
			t.Errorf("check %d = %s/%s %s, want %s/%s %s", i, c.Scenario, c.ID, c.Status, w.scenario, w.id, w.status)
		}
	}
	if !res.Passed("ping") || res.Passed("tools-list") || res.Passed("missing") {
		t.Errorf("Passed disagrees with the statuses: %v", res.Statuses())
	}
	if got := len(res.Failures()); got != 2 {
		t.Errorf("Failures() = %d, want 2", got)
	}
	if s := res.Summary(); !strings.Contains(s, "localhost-host-rebinding-rejected: FAILURE: Expected HTTP 4xx") {
		t.Errorf("Summary() = %q", s)
	}
}

func TestReadChecksErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"no results", nil},
		{"invalid json", map[string]string{"server-ping-2026-01-02T03-04-05-200Z": `[{"id":`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tt.files {
				if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name, "checks.json"), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := readChecks(dir, ""); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestDecodeClientLine(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		wantErr bool
	}{
		{"one line", `{"protocolVersion":"2025-11-25","sessionId":"s","tools":["a"],"resources":null,"call":null,"read":null,"prompt":null}` + "\n", false},
		{"empty", "", true},
		{"two lines", "{}\n{}\n", true},
		{"unknown field", `{"tools":[],"extra":1}`, true},
		{"not json", "hello\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := decodeClientLine([]byte(tt.out))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && (res.SessionID != "s" || len(res.Tools) != 1) {
				t.Errorf("res = %+v", res)
			}
		})
	}
}

func TestCappedBuffer(t *testing.T) {
	b := NewCappedBuffer(4)
	for _, s := range []string{"ab", "cdef", "g"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := string(b.Bytes()); got != "abcd" || !b.Overflowed() {
		t.Fatalf("kept %q, overflowed %v", got, b.Overflowed())
	}
}
