package floor

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// RecordSize is the length of one floor-3 journal record: about what a
// call's decision record takes in the gateway's audit log.
const RecordSize = 200

// Journal is floor 3's durable record: an append-only file to which a call is
// written and made durable (fdatasync) before anything else happens to it.
// It is safe for concurrent use; each Append makes its own fdatasync, with no
// group commit (the file system may still let concurrent ones share a
// journal commit, as it would for the gateway).
//
// fdatasync (unix.Fdatasync), not os.File.Sync (fsync): an append-only log
// needs its data and the file size durable, which fdatasync guarantees, and
// not the timestamps fsync also writes. It is the least a durable append
// costs, which is what a floor must measure; the benchmark is Linux-only
// already (it reads /proc).
type Journal struct {
	f     *os.File
	seq   atomic.Uint64
	syncs atomic.Uint64
}

// OpenJournal opens (creating it, owner-only) the append-only file at path.
func OpenJournal(path string) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	return &Journal{f: f}, nil
}

// Append writes one RecordSize record describing method and target and
// returns once it is durable.
func (j *Journal) Append(method, target string) error {
	rec := Record(j.seq.Add(1), time.Now(), method, target)
	if _, err := j.f.Write(rec); err != nil {
		return fmt.Errorf("journal append: %w", err)
	}
	return j.sync()
}

// sync fdatasyncs the file. Control keeps the descriptor from being closed
// under the call.
func (j *Journal) sync() error {
	conn, err := j.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("journal sync: %w", err)
	}
	var syncErr error
	if err := conn.Control(func(fd uintptr) {
		for {
			syncErr = unix.Fdatasync(int(fd))
			if !errors.Is(syncErr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("journal sync: %w", err)
	}
	if syncErr != nil {
		return fmt.Errorf("journal fdatasync: %w", syncErr)
	}
	j.syncs.Add(1)
	return nil
}

// Syncs counts the fdatasyncs that succeeded.
func (j *Journal) Syncs() uint64 { return j.syncs.Load() }

// Name is the journal's file path.
func (j *Journal) Name() string { return j.f.Name() }

// Close closes the file.
func (j *Journal) Close() error { return j.f.Close() }

// Record renders one journal record: sequence, time, method and target,
// padded (or cut) to exactly RecordSize bytes ending in a newline.
func Record(seq uint64, at time.Time, method, target string) []byte {
	b := make([]byte, 0, RecordSize)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ' ')
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, target...)
	if len(b) > RecordSize-1 {
		b = b[:RecordSize-1]
	}
	for len(b) < RecordSize-1 {
		b = append(b, ' ')
	}
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return append(b, '\n')
}

// DurableProxy is the floor-3 handler: Proxy, except that every POST (the
// requests that carry JSON-RPC calls) is first appended to j and made
// durable. The order is the gateway's write-ahead: the record is durable
// before the upstream sees the call, and a call whose record cannot be made
// durable is refused (503) without reaching the upstream. GET streams and
// DELETE pass straight through, as the gateway audits neither.
func DurableProxy(target *url.URL, j *Journal, errorLog *log.Logger) http.Handler {
	proxy := Proxy(target, errorLog)
	if errorLog == nil {
		errorLog = log.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if err := j.Append(r.Method, r.URL.RequestURI()); err != nil {
				errorLog.Printf("%v", err)
				http.Error(w, "journal append failed", http.StatusServiceUnavailable)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	})
}

// Probe times n appends of one record each (write and fdatasync, as floor 3
// makes per call) to j, the raw cost of a durable record on its file system.
func Probe(j *Journal, n int) ([]time.Duration, error) {
	if n < 1 {
		return nil, fmt.Errorf("probe: want at least one append, got %d", n)
	}
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := j.Append("PROBE", "/fdatasync"); err != nil {
			return out, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
