package auditsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"

	"crypto/sha256"
	"errors"
	"fmt"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/telemetry"
)

// logFile is what the log needs of its file; tests substitute one that fails.
type logFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// chainLog is the append-only, hash-chained log file with group commit: appends queue their
// records, and one committer at a time writes whatever has queued (up to maxBatch records)
// as one write and one fsync, then acknowledges each. Nothing is acknowledged as durable
// before its fsync returns.
//
// The committer is whoever finds nobody committing when there is a reason to commit: an
// append that waits for durability (or a sync) commits the queue itself, its own record
// included, on its own goroutine, so that a lone caller pays for no hand-off to another
// goroutine and back; otherwise the writer goroutine commits (deferred records lingering
// for commitDelay, a backlog left behind a commit, the queue at close). A caller that
// committed hands whatever queued meanwhile to the writer, so no caller commits for others
// more than once.
//
// The queue is bounded in records and bytes, counting the batch being committed, so the
// memory held by records not yet durable is at most maxQueue records and maxQueueBytes bytes
// (plus one record admitted into an empty queue whatever its size). An append that finds the
// queue full waits for room (backpressure) until its context ends; it is never dropped.
type chainLog struct {
	dir           string
	path          atomic.Pointer[string] // the segment appended to
	segmentBytes  int64
	maxBatch      int
	maxQueue      int
	maxQueueBytes int
	commitDelay   time.Duration
	logger        *slog.Logger

	mu          sync.Mutex
	closed      bool
	queue       []*pending    // waiting for the writer, in order
	queued      int           // records queued or in the batch being committed
	queuedBytes int           // their bytes
	urgent      int           // records in queue that someone waits on (durable appends, syncs)
	waiting     int           // appends waiting for room
	room        chan struct{} // closed (and replaced) when a commit frees room while appends wait
	wake        chan struct{} // capacity 1: something was queued, or the log closed
	alarm       *time.Timer   // signals the writer commitDelay after a deferred record entered an empty queue
	committing  bool          // a batch is being committed; the committer owns the fields below f
	done        chan struct{} // closed when the writer has exited

	broken             atomic.Pointer[error] // set when the file's state is unknown until restart
	lostDeferred       atomic.Uint64         // deferred records acknowledged as queued, then lost
	commits            atomic.Uint64         // successful fsyncs of records
	rotations          atomic.Uint64         // segments started by size
	breaks             atomic.Uint64         // breaks found at open (each recorded, logged at ERROR)
	checkpoints        atomic.Uint64         // checkpoints written
	checkpointFailures atomic.Uint64         // checkpoints not written or not anchored

	idPrefix  string        // random per open: the first half of every record id
	idCounter atomic.Uint64 // the second half

	head       atomic.Pointer[head]  // the last durable record, for the checkpointer
	ckpt       *checkpointer         // nil without a signing key
	ckptNoted  uint64                // committer's: the head seq that last woke the checkpointer
	writeFault atomic.Pointer[error] // FailWrites: every write fails with it

	notice commitNotice // how far the log is durable, for readers (read.go)

	// observe, if set before the writer starts, sees every record once it is durable (the
	// lag benchmark).
	observe func(p *pending)

	// Owned by the committer (and by open before the writer starts): whoever set committing.
	f        logFile
	segIndex int
	segName  string
	headSeg  string // the segment of the last durable record (segName unless it is empty)
	seq      uint64
	prev     []byte // hex hash of the last durable record
	size     int64  // bytes durable in the file
	batch    []*pending
	// metrics: nil without WithMetrics.
	metrics *telemetry.AuditMetrics
	buf     []byte
	h       hashWriter
}

// pending is one queued record and, once done is closed, its outcome. A pending without a
// record is a barrier (sync): it is acknowledged once everything queued before it is.
type pending struct {
	record   []byte
	callID   string     // for the log when a deferred record is lost
	cols     *pgColumns // the postgres store's indexed columns (pgread.go); nil with files
	deferred bool       // the caller was answered when it was queued; nobody waits on done
	queued   time.Time
	seq      uint64
	hash     string
	err      error
	done     chan struct{}
}

// synced waits for p, a sync's barrier, to commit: it fails if the commit failed, or if a
// deferred record has been lost (lost counts them) since the store was opened, which the
// store could then not say was durable.
func (p *pending) synced(ctx context.Context, lost *atomic.Uint64) error {
	select {
	case <-p.done:
		if p.err != nil {
			return p.err
		}
		if n := lost.Load(); n > 0 {
			return fmt.Errorf("%w: %d deferred records were lost since the log was opened", errUnavailable, n)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openLog opens the log in dir (creating its first segment if there is none), walks and
// verifies every segment, cuts away a torn last line, starts a new segment after a break it
// cannot continue (or a head the anchor says is missing), writes an OUTCOME_UNKNOWN record
// for every decision without an outcome, and leaves the log ready for start.
func openLog(dir string, lim limits, logger *slog.Logger) (*chainLog, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	created := len(segs) == 0
	if created {
		segs = []segment{{index: 0, name: FileName}}
		f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create audit log: %w", err)
		}
		f.Close()
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	var anchored *auditv1.Checkpoint
	if lim.anchor != nil {
		ctx, cancel := context.WithTimeout(context.Background(), anchorTimeout)
		anchored, err = lim.anchor.Load(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("load the audit log's anchor: %w", err)
		}
	}
	calls := newOpenCalls(lim.maxOpenCalls)
	anchorMatched := false
	w, err := walk(dir, segs, func(seg string, seq uint64, offset int64, record, hash []byte) error {
		if anchored != nil && seq == anchored.GetSequence() && seg == anchored.GetSegment() {
			anchorMatched = string(hash) == anchored.GetHash()
		}
		return calls.visit(seg, seq, offset, record)
	})
	if err != nil {
		return nil, fmt.Errorf("recover audit log %s: %w", dir, err)
	}
	// What does not hold: the chain broke and nothing continues it, or the anchor names a head
	// the log no longer has (records cut off, or changed with their chain recomputed).
	var broken []string
	for _, b := range w.breaks {
		if b.Kind != KindContinuation {
			logger.Error("audit log damaged", "segment", b.Segment, "sequence", b.Seq, "line", b.Line, "offset", b.Offset, "kind", b.Kind, "reason", b.Reason)
		}
	}
	if w.damaged {
		broken = append(broken, w.breaks[len(w.breaks)-1].Error())
	}
	if anchored != nil && !anchorMatched {
		reason := fmt.Sprintf("the head anchored outside the log (sequence %d in %s, hash %s) is not in it: records were cut off or changed", anchored.GetSequence(), anchored.GetSegment(), anchored.GetHash())
		if !w.damaged && anchored.GetSequence() > w.st.seq {
			reason = fmt.Sprintf("the head anchored outside the log is sequence %d but the log ends at %d: records were cut off", anchored.GetSequence(), w.st.seq)
		}
		logger.Error("audit log does not match its anchor", "anchor_sequence", anchored.GetSequence(), "anchor_segment", anchored.GetSegment(), "log_sequence", w.st.seq, "reason", reason)
		broken = append(broken, reason)
	}
	l := &chainLog{
		dir:           dir,
		maxBatch:      lim.maxBatch,
		maxQueue:      lim.maxQueue,
		maxQueueBytes: lim.maxQueueBytes,
		commitDelay:   lim.commitDelay,
		segmentBytes:  lim.segmentBytes,
		logger:        logger,
		room:          make(chan struct{}),
		wake:          make(chan struct{}, 1),
		done:          make(chan struct{}),
		batch:         make([]*pending, 0, lim.maxBatch),
		h:             sha256.New(),
		seq:           w.st.seq,
		prev:          w.st.hash,
		headSeg:       w.stSeg,
		idPrefix:      newIDPrefix(),
	}
	if l.segmentBytes <= 0 {
		l.segmentBytes = defaultSegmentBytes
	}
	l.alarm = time.AfterFunc(time.Hour, l.signal)
	l.alarm.Stop()
	if len(broken) > 0 {
		// The damaged files are kept as they are, for whoever investigates; the log goes on
		// in a new segment whose first record says what broke, chained to the last record
		// that verified.
		if err := l.openSegment(w.last.index + 1); err != nil {
			return nil, fmt.Errorf("recover audit log %s: %w", dir, err)
		}
		if err := l.recordBreak(lim.now(), strings.Join(broken, "; ")); err != nil {
			l.f.Close()
			return nil, fmt.Errorf("recover audit log %s: %w", dir, err)
		}
	} else {
		path := filepath.Join(dir, w.last.name)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open audit log: %w", err)
		}
		if err := lockFile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock audit log %s (is another auditsvc using it?): %w", path, err)
		}
		if w.torn > 0 {
			logger.Warn("audit log ends with an incomplete line, probably a write torn by a crash; cutting it away",
				"path", path, "bytes", w.torn, "last_sequence", w.st.seq)
			if err := f.Truncate(w.st.size); err != nil {
				f.Close()
				return nil, fmt.Errorf("truncate torn audit log tail: %w", err)
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return nil, fmt.Errorf("sync audit log: %w", err)
			}
		}
		l.f, l.segIndex, l.segName, l.size = dataFile{f}, w.last.index, w.last.name, w.st.size
		l.path.Store(&path)
	}
	if err := l.closeOpenCalls(dir, calls, lim.now()); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("recover audit log %s: %w", dir, err)
	}
	return l, nil
}

// openSegment creates segment index, locks it and makes it the one appended to. The
// committer calls it (or open, before the writer starts); the previous file is closed.
func (l *chainLog) openSegment(index int) error {
	name := segmentName(index)
	path := filepath.Join(l.dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create audit segment: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return fmt.Errorf("lock audit segment %s: %w", path, err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	if l.f != nil {
		_ = l.f.Close()
	}
	l.f, l.segIndex, l.segName, l.size = dataFile{f}, index, name, 0
	l.path.Store(&path)
	return nil
}

// rotate starts the next segment once the current one has reached segmentBytes. A failure
// leaves the current segment in use (it grows past the bound) and is logged: the log stays
// correct, and the next commit tries again.
func (l *chainLog) rotate() {
	if err := l.openSegment(l.segIndex + 1); err != nil {
		l.logger.Error("audit segment not rotated; appending to the current one", "path", *l.path.Load(), "err", err)
		return
	}
	l.rotations.Add(1)
}

// start starts the writer.
func (l *chainLog) start() { go l.run() }

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

// append queues record (compact protojson). Unless deferred, it waits until the record is
// durable and returns its sequence and hash; if ctx ends first the record may still be
// committed. A deferred append returns once the record is queued (sequence 0, no hash). Either
// waits for room in the queue while it is full, until ctx ends.
func (l *chainLog) append(ctx context.Context, record []byte, rec *auditv1.Record, deferred bool) (uint64, string, error) {
	p := &pending{record: record, callID: rec.GetCallId(), deferred: deferred}
	if !deferred {
		p.done = make(chan struct{})
	}
	if err := l.enqueue(ctx, p); err != nil {
		return 0, "", err
	}
	if deferred {
		return 0, "", nil
	}
	l.lead()
	select {
	case <-p.done:
		return p.seq, p.hash, p.err
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
}

// sync waits until every record queued before it is durable. It fails if the log cannot say
// so: the log is broken, the commit failed, or a deferred record has been lost since the log
// was opened.
func (l *chainLog) sync(ctx context.Context) error {
	p := &pending{done: make(chan struct{})}
	if err := l.enqueue(ctx, p); err != nil {
		return err
	}
	l.lead()
	return p.synced(ctx, &l.lostDeferred)
}

// enqueue adds p to the queue once there is room, or fails when the log is closed or broken
// or ctx ends.
func (l *chainLog) enqueue(ctx context.Context, p *pending) error {
	p.queued = time.Now()
	l.mu.Lock()
	for {
		if l.closed {
			l.mu.Unlock()
			return errClosed
		}
		if err := l.broken.Load(); err != nil {
			l.mu.Unlock()
			return fmt.Errorf("%w: %w", errUnavailable, *err)
		}
		if l.queued == 0 || (l.queued < l.maxQueue && l.queuedBytes+len(p.record) <= l.maxQueueBytes) {
			break
		}
		room := l.room
		l.waiting++
		l.mu.Unlock()
		l.signal() // a lingering writer commits at once for a waiter
		select {
		case <-room:
		case <-ctx.Done():
			l.mu.Lock()
			l.waiting--
			l.mu.Unlock()
			return fmt.Errorf("wait for room in the audit queue: %w", ctx.Err())
		}
		l.mu.Lock()
		l.waiting--
	}
	l.queue = append(l.queue, p)
	l.queued++
	l.queuedBytes += len(p.record)
	if !p.deferred {
		l.urgent++
	}
	// A durable append (or a sync) commits the queue itself once it is queued (lead), or, if
	// a commit is in progress, is taken along by the committer's next look at the queue:
	// either way the writer is not woken for it. A deferred record queued behind others
	// changes nothing the committer waits on either: the writer is lingering until the
	// oldest one's commitDelay (or a commit is in progress, and the queue is looked at again
	// when it is done). Waking it for each would cost a switch per call under load. One that
	// enters an empty queue does not wake it either, but sets the alarm for commitDelay: a
	// durable append usually comes first and takes it along (at one call at a time, the next
	// call's decision), saving the writer a wake-up and a timer of its own.
	wake := p.deferred && len(l.queue) >= l.maxBatch
	if p.deferred && len(l.queue) == 1 {
		if l.commitDelay > 0 {
			l.alarm.Reset(l.commitDelay)
		} else {
			wake = true
		}
	}
	l.mu.Unlock()
	if wake {
		l.signal()
	}
	return nil
}

// lead commits the queue on the caller's goroutine if nobody is committing, then hands
// whatever queued meanwhile (or a close waiting for the queue) to the writer. A caller that
// finds a commit in progress leaves its record to it: every committer looks at the queue
// again when done.
func (l *chainLog) lead() {
	l.mu.Lock()
	if l.committing || len(l.queue) == 0 {
		l.mu.Unlock()
		return
	}
	l.commitQueued()
	handOff := len(l.queue) > 0 || l.closed
	l.mu.Unlock()
	if handOff {
		l.signal()
	}
}

// commitQueued commits up to maxBatch queued records as one batch. It is called with mu held,
// nobody committing and the queue not empty; it releases mu during the commit and returns
// with mu held again.
func (l *chainLog) commitQueued() {
	l.committing = true
	n := min(len(l.queue), l.maxBatch)
	batch := append(l.batch[:0], l.queue[:n]...)
	for _, p := range batch {
		if !p.deferred {
			l.urgent--
		}
	}
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	l.mu.Unlock()

	l.metrics.Batch(n)
	l.buf = l.commit(l.h, l.buf[:0], batch)
	if cap(l.buf) > maxKeptBuffer {
		l.buf = nil // a rare huge batch should not pin its buffer
	}
	bytes := 0
	for _, p := range batch {
		bytes += len(p.record)
	}
	clear(batch) // drop the references to acknowledged records
	l.batch = batch

	l.mu.Lock()
	l.committing = false
	l.queued -= n
	l.queuedBytes -= bytes
	if l.waiting > 0 {
		// Waiters took l.room under mu when they counted themselves: with none, nobody
		// holds it, and a commit (one per call at one call at a time) allocates nothing.
		close(l.room)
		l.room = make(chan struct{})
	}
}

// signal wakes the writer if it waits.
func (l *chainLog) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// maxKeptBuffer is the largest write buffer the writer keeps between batches.
const maxKeptBuffer = 1 << 20

// run is the writer: it commits what no caller commits, and exits once the log is closed,
// the queue is empty and nobody is committing. It commits as soon as there is a reason to,
// except when the queue holds deferred records only: then it waits, until commitDelay after
// the oldest was queued, for a durable append (or a sync, a full batch, an append waiting for
// room, close) to share the fsync. At one call at a time this keeps the hot path at one
// fsync per call: the outcome of a call rides with the decision of the next instead of
// taking an fsync of its own that the next decision would queue behind. A deferred record is
// therefore durable within commitDelay plus the commit in progress plus its own commit.
func (l *chainLog) run() {
	defer close(l.done)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	l.mu.Lock()
	for {
		if l.committing || len(l.queue) == 0 {
			if l.closed && !l.committing {
				l.mu.Unlock()
				return
			}
			// A committer signals when it is done and something is left, or the log closed.
			l.mu.Unlock()
			<-l.wake
			l.mu.Lock()
			continue
		}
		if !l.closed {
			wait := l.commitDelay - time.Since(l.queue[0].queued)
			if l.urgent == 0 && l.waiting == 0 && len(l.queue) < l.maxBatch && wait > 0 {
				l.mu.Unlock()
				linger.Reset(wait)
				select {
				case <-l.wake:
					linger.Stop()
				case <-linger.C:
				}
				l.mu.Lock()
				continue
			}
		}
		l.commitQueued()
	}
}

// commit writes batch as one write and one fsync. On success every record is acknowledged
// with its sequence and hash; on failure none is, the file is cut back to its last durable
// size, every waiter gets errUnavailable, and every deferred record of the batch is counted
// and logged as lost (its caller was answered when it was queued). A failed write that
// could be cut back leaves the log usable; a failed fsync, or a failed cut, breaks it until
// restart. It returns buf for reuse.
func (l *chainLog) commit(h hashWriter, buf []byte, batch []*pending) []byte {
	fail := func(err error) {
		// Count and log the loss before any waiter (a Sync among them) learns of the failure.
		var lost []string
		for _, p := range batch {
			if p.deferred {
				lost = append(lost, p.callID)
			}
		}
		if len(lost) > 0 {
			l.lostDeferred.Add(uint64(len(lost)))
			l.logger.Error("deferred audit records lost: their callers were answered before the commit failed",
				"path", *l.path.Load(), "records", len(lost), "call_ids", lost, "err", err)
		}
		for _, p := range batch {
			p.err = err
			if !p.deferred {
				close(p.done)
			}
		}
	}
	if err := l.broken.Load(); err != nil {
		fail(fmt.Errorf("%w: %w", errUnavailable, *err))
		return buf
	}
	seq, prev := l.seq, l.prev
	for _, p := range batch {
		if p.record == nil {
			continue // a barrier
		}
		seq++
		buf, prev = appendLine(h, buf, seq, prev, p.record)
		p.seq, p.hash = seq, string(prev)
	}
	if len(buf) > 0 {
		if err := l.write(buf); err != nil {
			l.logger.Error("audit log write failed; the batch is refused", "path", *l.path.Load(), "records", len(batch), "err", err)
			if rerr := l.restore(); rerr != nil {
				l.breakLog(rerr)
			}
			fail(fmt.Errorf("%w: write audit log: %w", errUnavailable, err))
			return buf
		}
		if err := l.f.Sync(); err != nil {
			// After a failed fsync the kernel may have dropped the dirty pages and a later
			// fsync may succeed without them: nothing in memory can be trusted, only a
			// restart that re-reads the file. Cut the batch off anyway so that the file stays
			// a valid chain.
			l.logger.Error("audit log fsync failed; the batch is refused", "path", *l.path.Load(), "records", len(batch), "err", err)
			if rerr := l.restore(); rerr != nil {
				err = errors.Join(err, rerr)
			}
			l.breakLog(fmt.Errorf("fsync failed: %w", err))
			fail(fmt.Errorf("%w: sync audit log: %w", errUnavailable, err))
			return buf
		}
	}
	if len(buf) > 0 {
		l.commits.Add(1)
	}
	l.seq, l.prev, l.size = seq, prev, l.size+int64(len(buf))
	if len(buf) > 0 {
		l.headSeg = l.segName
		l.noteHead()
		if l.size >= l.segmentBytes {
			l.rotate()
		}
	}
	l.notice.publish(l.seq, l.size) // readers (read.go) see committed records only
	for _, p := range batch {
		if l.observe != nil {
			l.observe(p)
		}
		if !p.deferred {
			close(p.done)
		}
	}
	return buf
}

// write writes buf to the file, unless a fault was injected with FailWrites.
func (l *chainLog) write(buf []byte) error {
	if err := l.writeFault.Load(); err != nil {
		return *err
	}
	_, err := l.f.Write(buf)
	return err
}

// breakLog makes every later append fail: the file's state is unknown until a restart
// recovers it from disk.
func (l *chainLog) breakLog(err error) {
	l.broken.Store(&err)
	l.logger.Error("audit log is broken; refusing every append until restart", "path", *l.path.Load(), "err", err)
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

// close stops accepting records, commits those already queued (deferred ones included) and
// closes the file. If ctx ends first, the writer finishes on its own and close returns ctx's
// error.
func (l *chainLog) close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.signal()
	select {
	case <-l.done:
	case <-ctx.Done():
		go func() { <-l.done; _ = l.f.Close(); l.stopCheckpointer() }()
		return fmt.Errorf("close audit log: %w", ctx.Err())
	}
	err := l.f.Close()
	l.stopCheckpointer()
	if err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}

// abort closes a log whose writer never started (New failed after openLog): close would wait
// for the writer forever. Closing the segment releases its lock, so the directory can be opened
// again; a running checkpointer is stopped without signing a final head (nothing was appended
// since the one it signed at start).
func (l *chainLog) abort() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.alarm.Stop()
	if c := l.ckpt; c != nil {
		close(c.stop)
		<-c.done
		_ = c.file.Close()
	}
	_ = l.f.Close()
}

// newIDPrefix draws the random half of this open's record ids.
func newIDPrefix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// nextID is a record id: 64 random bits drawn when the log opened, then a 64-bit counter,
// hex. Unique within an open by the counter, across opens by the prefix (a collision needs
// two opens to draw the same 64 bits), and cheaper than 128 fresh random bits per record.
func (l *chainLog) nextID() string {
	var b [32]byte
	n := l.idCounter.Add(1)
	const digits = "0123456789abcdef"
	for i := 31; i >= 16; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	copy(b[:16], l.idPrefix)
	return string(b[:])
}
