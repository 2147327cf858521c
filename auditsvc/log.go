package auditsvc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// logFile is what the log needs of its file; tests substitute one that fails.
type logFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// chainLog is the append-only, hash-chained log file with group commit: Appends queue their
// records, and one writer goroutine writes whatever has queued as one write and one fsync,
// then acknowledges each. Nothing is acknowledged before its fsync returns.
type chainLog struct {
	path     string
	maxBatch int
	logger   *slog.Logger

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool
	queue  chan *pending
	done   chan struct{} // closed when the writer has exited

	// Owned by the writer goroutine (and by open before it starts).
	f      logFile
	seq    uint64
	prev   []byte // hex hash of the last durable record
	size   int64  // bytes durable in the file
	broken error  // set when the file could not be restored after a failed write
}

// pending is one queued record and, once done is closed, its outcome.
type pending struct {
	record []byte
	seq    uint64
	hash   string
	err    error
	done   chan struct{}
}

// openLog opens or creates path, verifies the chain, cuts away a torn last line, and
// starts the writer.
func openLog(path string, maxBatch int, logger *slog.Logger) (*chainLog, error) {
	created := false
	if _, err := os.Stat(path); os.IsNotExist(err) {
		created = true
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock audit log %s (is another auditsvc using it?): %w", path, err)
	}
	st, torn, err := scan(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("recover audit log %s: %w", path, err)
	}
	if torn > 0 {
		logger.Warn("audit log ends with an incomplete line, probably a write torn by a crash; cutting it away",
			"path", path, "bytes", torn, "last_sequence", st.seq)
		if err := f.Truncate(st.size); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate torn audit log tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync audit log: %w", err)
		}
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	l := &chainLog{
		path:     path,
		maxBatch: maxBatch,
		logger:   logger,
		queue:    make(chan *pending, maxBatch),
		done:     make(chan struct{}),
		f:        f,
		seq:      st.seq,
		prev:     st.hash,
		size:     st.size,
	}
	go l.run()
	return l, nil
}

// syncDir makes a new file's directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync audit dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync audit dir: %w", err)
	}
	return nil
}

// append queues record (compact protojson) and waits until it is durable, returning its
// sequence and hash. If ctx ends first the record may still be committed.
func (l *chainLog) append(ctx context.Context, record []byte) (uint64, string, error) {
	p := &pending{record: record, done: make(chan struct{})}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, "", errClosed
	}
	select {
	case l.queue <- p:
	case <-ctx.Done():
		l.mu.RUnlock()
		return 0, "", ctx.Err()
	}
	l.mu.RUnlock()
	select {
	case <-p.done:
		return p.seq, p.hash, p.err
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
}

// maxKeptBuffer is the largest write buffer the writer keeps between batches.
const maxKeptBuffer = 1 << 20

// run is the writer: it takes what has queued, up to maxBatch, and commits it.
func (l *chainLog) run() {
	defer close(l.done)
	batch := make([]*pending, 0, l.maxBatch)
	var buf []byte
	h := sha256.New()
	for p := range l.queue {
		batch = append(batch[:0], p)
	fill:
		for len(batch) < l.maxBatch {
			select {
			case p, ok := <-l.queue:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		buf = l.commit(h, buf[:0], batch)
		if cap(buf) > maxKeptBuffer {
			buf = nil // a rare huge batch should not pin its buffer
		}
		clear(batch) // drop the references to acknowledged records
	}
}

// commit writes batch as one write and one fsync. On success every record is acknowledged
// with its sequence and hash; on failure none is, the file is cut back to its last durable
// size, and every waiter gets errUnavailable. A failed write that could be cut back leaves
// the log usable; a failed fsync, or a failed cut, breaks it until restart. It returns buf
// for reuse.
func (l *chainLog) commit(h hashWriter, buf []byte, batch []*pending) []byte {
	fail := func(err error) {
		for _, p := range batch {
			p.err = err
			close(p.done)
		}
	}
	if l.broken != nil {
		fail(fmt.Errorf("%w: %w", errUnavailable, l.broken))
		return buf
	}
	seq, prev := l.seq, l.prev
	for _, p := range batch {
		seq++
		buf, prev = appendLine(h, buf, seq, prev, p.record)
		p.seq, p.hash = seq, string(prev)
	}
	if _, err := l.f.Write(buf); err != nil {
		l.logger.Error("audit log write failed; the batch is refused", "path", l.path, "records", len(batch), "err", err)
		if rerr := l.restore(); rerr != nil {
			l.breakLog(rerr)
		}
		fail(fmt.Errorf("%w: write audit log: %w", errUnavailable, err))
		return buf
	}
	if err := l.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages and a later fsync
		// may succeed without them: nothing in memory can be trusted, only a restart that
		// re-reads the file. Cut the batch off anyway so that the file stays a valid chain.
		l.logger.Error("audit log fsync failed; the batch is refused", "path", l.path, "records", len(batch), "err", err)
		if rerr := l.restore(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		l.breakLog(fmt.Errorf("fsync failed: %w", err))
		fail(fmt.Errorf("%w: sync audit log: %w", errUnavailable, err))
		return buf
	}
	l.seq, l.prev, l.size = seq, prev, l.size+int64(len(buf))
	for _, p := range batch {
		close(p.done)
	}
	return buf
}

// breakLog makes every later append fail: the file's state is unknown until a restart
// recovers it from disk.
func (l *chainLog) breakLog(err error) {
	l.broken = err
	l.logger.Error("audit log is broken; refusing every append until restart", "path", l.path, "err", err)
}

// restore cuts the file back to the last acknowledged record after a failed write.
func (l *chainLog) restore() error {
	if err := l.f.Truncate(l.size); err != nil {
		return fmt.Errorf("truncate to %d bytes: %w", l.size, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync after truncate: %w", err)
	}
	return nil
}

// close stops accepting records, commits those already queued and closes the file. If ctx
// ends first, the writer finishes on its own and close returns ctx's error.
func (l *chainLog) close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.queue)
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		go func() { <-l.done; _ = l.f.Close() }()
		return fmt.Errorf("close audit log: %w", ctx.Err())
	}
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}
