package floor_test

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/bench/internal/floor"
)

func TestRecord(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 28, 10, 0, 0, 5, time.UTC)
	tests := []struct {
		name, method, target string
		wantPrefix           string
	}{
		{name: "call", method: "POST", target: "/mcp", wantPrefix: "7 2026-11-28T10:00:00.000000005Z POST /mcp "},
		{name: "long target is cut", method: "POST", target: "/" + strings.Repeat("a", 500), wantPrefix: "7 2026-11-28T10:00:00.000000005Z POST /aaa"},
		{name: "line breaks are blanked", method: "POST", target: "/a\nb\rc", wantPrefix: "7 2026-11-28T10:00:00.000000005Z POST /a b c "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := floor.Record(7, at, tc.method, tc.target)
			if len(rec) != floor.RecordSize {
				t.Fatalf("record is %d bytes, want %d", len(rec), floor.RecordSize)
			}
			if !bytes.HasPrefix(rec, []byte(tc.wantPrefix)) {
				t.Fatalf("record = %q, want prefix %q", rec, tc.wantPrefix)
			}
			if i := bytes.IndexAny(rec, "\r\n"); i != floor.RecordSize-1 {
				t.Fatalf("first line break at %d, want only the last byte", i)
			}
		})
	}
}

// fileSize is the size of the file at path, failing the test if unreadable.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestDurableProxyWriteAhead checks floor 3's order: when the upstream sees
// a POST, its record is already in the journal and fdatasynced; GET and
// DELETE are not recorded.
func TestDurableProxyWriteAhead(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "journal")
	j, err := floor.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	type seen struct {
		method      string
		size        int64
		syncs       uint64
		body, query string
	}
	seenc := make(chan seen, 10)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		st, err := os.Stat(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		seenc <- seen{method: r.Method, size: st.Size(), syncs: j.Syncs(), body: string(body), query: r.URL.RawQuery}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(upstream.Close)
	target, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(floor.DurableProxy(target, j, log.New(io.Discard, "", 0)))
	t.Cleanup(proxy.Close)

	tests := []struct {
		name                string
		method              string
		wantSize            int64
		wantSyncs           uint64
		wantRecordHasMethod bool
		wantBody, wantQuery string
	}{
		{name: "first POST", method: http.MethodPost, wantSize: floor.RecordSize, wantSyncs: 1, wantBody: `{"id":1}`, wantQuery: "a=1"},
		{name: "GET not recorded", method: http.MethodGet, wantSize: floor.RecordSize, wantSyncs: 1, wantQuery: "a=1"},
		{name: "DELETE not recorded", method: http.MethodDelete, wantSize: floor.RecordSize, wantSyncs: 1, wantQuery: "a=1"},
		{name: "second POST", method: http.MethodPost, wantSize: 2 * floor.RecordSize, wantSyncs: 2, wantBody: `{"id":1}`, wantQuery: "a=1"},
	}
	// Sequential: each row depends on the journal the previous ones left.
	for _, tc := range tests {
		var body io.Reader
		if tc.wantBody != "" {
			body = strings.NewReader(tc.wantBody)
		}
		req, err := http.NewRequestWithContext(t.Context(), tc.method, proxy.URL+"/mcp?a=1", body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := proxy.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", tc.name, resp.StatusCode)
		}
		got := <-seenc
		if got.method != tc.method || got.size != tc.wantSize || got.syncs != tc.wantSyncs || got.body != tc.wantBody || got.query != tc.wantQuery {
			t.Fatalf("%s: upstream saw %+v, want journal %d bytes after %d syncs, body %q, query %q", tc.name, got, tc.wantSize, tc.wantSyncs, tc.wantBody, tc.wantQuery)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("1 ")) || !bytes.Contains(b[:floor.RecordSize], []byte(" POST /mcp?a=1 ")) || !bytes.HasPrefix(b[floor.RecordSize:], []byte("2 ")) {
		t.Fatalf("journal = %q", b)
	}
}

// TestDurableProxyFailsClosed: a call whose record cannot be written never
// reaches the upstream.
func TestDurableProxyFailsClosed(t *testing.T) {
	t.Parallel()
	j, err := floor.OpenJournal(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	j.Close() // every append now fails
	var hits atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	t.Cleanup(upstream.Close)
	target, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	proxy := httptest.NewServer(floor.DurableProxy(target, j, log.New(&logged, "", 0)))
	t.Cleanup(proxy.Close)
	resp, err := proxy.Client().Post(proxy.URL+"/mcp", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503", resp.StatusCode)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("upstream got %d requests, want none", n)
	}
	if !strings.Contains(logged.String(), "journal append") {
		t.Fatalf("log = %q, want the append failure", logged.String())
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "probe")
	j, err := floor.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	if _, err := floor.Probe(j, 0); err == nil {
		t.Fatal("Probe(0) succeeded, want an error")
	}
	lat, err := floor.Probe(j, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 5 || j.Syncs() != 5 {
		t.Fatalf("%d latencies after %d syncs, want 5 and 5", len(lat), j.Syncs())
	}
	for i, d := range lat {
		if d <= 0 {
			t.Fatalf("latency %d = %v", i, d)
		}
	}
	if got := fileSize(t, path); got != 5*floor.RecordSize {
		t.Fatalf("probe file is %d bytes, want %d", got, 5*floor.RecordSize)
	}
}

// TestJournalConcurrent: concurrent appends each land whole, once, in a
// record of their own, and each is synced.
func TestJournalConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "journal")
	j, err := floor.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	const writers, each = 8, 10
	errc := make(chan error, writers)
	for w := range writers {
		go func() {
			for range each {
				if err := j.Append("POST", "/w"+strconv.Itoa(w)); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if j.Syncs() != writers*each {
		t.Fatalf("%d syncs, want %d", j.Syncs(), writers*each)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != writers*each*floor.RecordSize {
		t.Fatalf("journal is %d bytes, want %d", len(b), writers*each*floor.RecordSize)
	}
	seqs := map[string]bool{}
	perWriter := map[string]int{}
	for i := 0; i < len(b); i += floor.RecordSize {
		rec := string(b[i : i+floor.RecordSize])
		fields := strings.Fields(rec)
		if !strings.HasSuffix(rec, "\n") || len(fields) != 4 || fields[2] != "POST" {
			t.Fatalf("record %d = %q", i/floor.RecordSize, rec)
		}
		if seqs[fields[0]] {
			t.Fatalf("sequence %s twice", fields[0])
		}
		seqs[fields[0]] = true
		perWriter[fields[3]]++
	}
	for w := range writers {
		if n := perWriter["/w"+strconv.Itoa(w)]; n != each {
			t.Errorf("writer %d has %d records, want %d", w, n, each)
		}
	}
}
