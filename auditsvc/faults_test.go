package auditsvc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
)

// faultyFile wraps the log's file and fails on demand, like a full or failing disk.
type faultyFile struct {
	logFile
	failWrite    atomic.Bool // write half the bytes, then fail
	failSync     atomic.Bool
	failTruncate atomic.Bool
}

var errDisk = errors.New("injected disk failure")

func (f *faultyFile) Write(p []byte) (int, error) {
	if f.failWrite.Load() {
		n, _ := f.logFile.Write(p[:len(p)/2])
		return n, errDisk
	}
	return f.logFile.Write(p)
}

func (f *faultyFile) Sync() error {
	if f.failSync.Load() {
		return errDisk
	}
	return f.logFile.Sync()
}

func (f *faultyFile) Truncate(size int64) error {
	if f.failTruncate.Load() {
		return errDisk
	}
	return f.logFile.Truncate(size)
}

func testRecord() *auditv1.Record {
	return &auditv1.Record{Server: "files", Method: "tools/call", Tool: "read", Outcome: auditv1.Outcome_OUTCOME_ALLOWED}
}

func appendOne(s *Service) (uint64, error) {
	resp, err := s.Append(context.Background(), connect.NewRequest(&auditv1.AppendRequest{Record: testRecord()}))
	if err != nil {
		return 0, err
	}
	return resp.Msg.GetSequence(), nil
}

// appendMany appends n records concurrently and returns their errors.
func appendMany(s *Service, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = appendOne(s) })
	}
	wg.Wait()
	return errs
}

// TestFailClosed: when the write or the fsync fails, every waiting Append is refused with
// Unavailable and nothing of the batch stays in the file. A failed write that could be cut
// back leaves the log usable once the disk recovers; a failed fsync or a failed cut keeps it
// refusing until a restart, which recovers from what is on disk.
func TestFailClosed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		inject        func(*faultyFile)
		needsRestart  bool
		durableDuring uint64 // records in the file while the fault lasts
	}{
		{"write fails halfway", func(f *faultyFile) { f.failWrite.Store(true) }, false, 2},
		{"fsync fails", func(f *faultyFile) { f.failSync.Store(true) }, true, 2},
		// Half the batch stays: whole lines of it (never acknowledged) and a torn one, which
		// the restart cuts away. The whole lines survive, as after a crash before the ack.
		{"write and cut fail", func(f *faultyFile) { f.failWrite.Store(true); f.failTruncate.Store(true) }, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := New(Config{Dir: dir}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			for range 2 {
				if _, err := appendOne(s); err != nil {
					t.Fatal(err)
				}
			}
			// The writer reads l.f only after receiving from the queue, which the Appends
			// below send to after this store.
			f := &faultyFile{logFile: s.log.f}
			s.log.f = f
			tt.inject(f)
			for i, err := range appendMany(s, 10) {
				if connect.CodeOf(err) != connect.CodeUnavailable {
					t.Fatalf("append %d during the fault: err = %v, want Unavailable", i, err)
				}
			}
			n, err := Verify(s.Path())
			if tt.durableDuring > 0 && (err != nil || n != tt.durableDuring) {
				t.Fatalf("Verify during the fault = %d, %v; want the %d acknowledged records", n, err, tt.durableDuring)
			}
			if _, broken := errors.AsType[*ChainError](err); tt.durableDuring == 0 && (broken || n < 2) {
				t.Fatalf("Verify during the fault = %d, %v; want an intact chain of at least 2, perhaps with a torn tail", n, err)
			}
			f.failWrite.Store(false)
			f.failSync.Store(false)
			f.failTruncate.Store(false)
			want := uint64(3)
			seq, err := appendOne(s)
			if tt.needsRestart {
				if connect.CodeOf(err) != connect.CodeUnavailable {
					t.Fatalf("append after the fault = %d, %v; a broken log must refuse until restart", seq, err)
				}
				if err := s.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				if s, err = New(Config{Dir: dir}, nil); err != nil {
					t.Fatalf("restart: %v", err)
				}
				t.Cleanup(func() { _ = s.Close(context.Background()) })
				if tt.durableDuring == 0 {
					want = n + 1
				}
				seq, err = appendOne(s)
			}
			if err != nil || seq != want {
				t.Fatalf("append after recovery = %d, %v; want sequence %d", seq, err, want)
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n, err := Verify(s.Path()); err != nil || n != want {
				t.Fatalf("Verify = %d, %v; want %d", n, err, want)
			}
		})
	}
}
