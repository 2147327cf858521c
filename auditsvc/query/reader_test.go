package query_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/auditsvc"
	"github.com/gatehouse-mcp/gatehouse/auditsvc/query"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// writeLines writes records from..to as log lines (the chain is not checked by readers),
// with a line that is not a record (a checkpoint, say) after the first.
func writeLines(t *testing.T, path string, from, to int) {
	t.Helper()
	var b strings.Builder
	for seq := from; seq <= to; seq++ {
		fmt.Fprintf(&b, `{"seq":%d,"prev":"00","record":{"server":"s","method":"tools/call","tool":"t-%d"},"hash":"00"}`+"\n", seq, seq)
		if seq == from {
			b.WriteString(`{"checkpoint":{"seq":1,"sig":"x"}}` + "\n")
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func sequences(t *testing.T, e *query.Engine, pageSize uint32) []uint64 {
	t.Helper()
	var out []uint64
	req := &auditv1.QueryRequest{PageSize: pageSize}
	for {
		resp, err := e.Query(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range resp.GetEntries() {
			out = append(out, en.GetSequence())
		}
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// A log in segments is read in order across them, lines without a record skipped, pages
// resuming across a file boundary; a torn last line is not read until it is whole.
func TestSegments(t *testing.T) {
	dir := t.TempDir()
	// The log's layout: audit.log is the first segment, the numbered ones follow it.
	writeLines(t, filepath.Join(dir, "audit.log"), 1, 3)
	writeLines(t, filepath.Join(dir, "audit-00000001.log"), 4, 5)
	last := filepath.Join(dir, "audit-00000002.log")
	writeLines(t, last, 6, 8)
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":9,"prev":"00","record":{"ser`) // torn
	f.Close()
	e := query.NewEngine(query.NewReader(auditsvc.SegmentFiles(dir), nil))
	want := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	for _, size := range []uint32{1, 2, 3, 100} {
		if got := sequences(t, e, size); !slices.Equal(got, want) {
			t.Fatalf("page size %d: %v, want %v", size, got, want)
		}
	}

	// A token taken before the log rotated resumes at its sequence across the new segment.
	resp, err := e.Query(context.Background(), &auditv1.QueryRequest{PageSize: 6})
	if err != nil || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %v %v", resp, err)
	}
	writeLines(t, last, 6, 8) // the torn line is gone: the writer rotated instead
	writeLines(t, filepath.Join(dir, "audit-00000003.log"), 9, 9)
	next, err := e.Query(context.Background(), &auditv1.QueryRequest{PageSize: 100, PageToken: resp.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, en := range next.GetEntries() {
		got = append(got, en.GetSequence())
	}
	if !slices.Equal(got, []uint64{7, 8, 9}) {
		t.Fatalf("after the rotation: %v, want [7 8 9]", got)
	}
}

// Records after the committed sequence are not read, even when their lines are whole.
func TestCommittedOnly(t *testing.T) {
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "audit.log"), 1, 5)
	committed := uint64(3)
	e := query.NewEngine(query.NewReader(auditsvc.SegmentFiles(dir), func() uint64 { return committed }))
	if got := sequences(t, e, 10); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("%v, want [1 2 3]", got)
	}
	committed = 5
	if got := sequences(t, e, 10); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("%v, want all five", got)
	}
}
