package auditsvc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Checkpoints are the log's defence against a deliberate edit: the chain alone only shows
// accidents, since whoever can write the file can recompute every hash after a change. A
// checkpoint is the head (sequence, hash, segment) signed with an Ed25519 key that is not
// kept beside the log; the log appends each to CheckpointsFileName and stores the latest
// in its Anchor (etcd). Verify then finds a record changed with its chain recomputed (a
// checkpoint's hash no longer matches) and records cut off the end (a checkpoint or the anchor
// is ahead of the log), back to the last checkpoint: at most CheckpointRecords records or
// CheckpointInterval of records, plus what was not durable yet, can go unnoticed.

// CheckpointsFileName is the file of signed checkpoints in the log's directory, JSON lines.
const CheckpointsFileName = "checkpoints.log"

// Defaults and bounds of checkpointing.
const (
	defaultCheckpointRecords  = 1000
	defaultCheckpointInterval = 10 * time.Second
	minCheckpointInterval     = 100 * time.Millisecond
	maxCheckpointLine         = 4096
	// anchorTimeout bounds one write of the anchor.
	anchorTimeout = 5 * time.Second
)

// checkpointMessage is what a checkpoint's signature covers: v2 with its place in the chain of
// checkpoints, v1 (index 0) for those written before checkpoints were chained.
func checkpointMessage(c *auditv1.Checkpoint) []byte {
	t := c.GetTime().AsTime().UTC().Format(time.RFC3339Nano)
	if c.GetIndex() == 0 {
		return fmt.Appendf(nil, "gatehouse audit checkpoint v1\n%d\n%s\n%s\n%s\n", c.GetSequence(), c.GetHash(), c.GetSegment(), t)
	}
	return fmt.Appendf(nil, "gatehouse audit checkpoint v2\n%d\n%s\n%s\n%s\n%d\n%s\n", c.GetSequence(), c.GetHash(), c.GetSegment(), t,
		c.GetIndex(), c.GetPrev())
}

// checkpointHash is what the next checkpoint names as prev: its signed message and signature.
func checkpointHash(c *auditv1.Checkpoint) string {
	h := sha256.New()
	h.Write(checkpointMessage(c))
	h.Write(c.GetSignature())
	return hex.EncodeToString(h.Sum(nil))
}

// signCheckpoint makes the checkpoint of a head, the index-th of the file, after the one whose
// hash is prev.
func signCheckpoint(key ed25519.PrivateKey, seq uint64, hash, seg string, now time.Time, index uint64, prev string) *auditv1.Checkpoint {
	c := &auditv1.Checkpoint{Sequence: seq, Hash: hash, Segment: seg, Time: timestamppb.New(now),
		PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Index: index, Prev: prev}
	c.Signature = ed25519.Sign(key, checkpointMessage(c))
	return c
}

// checkSignature verifies c against pub (or, when pub is nil, against the key it names,
// which only shows the checkpoint was not damaged by accident).
func checkSignature(c *auditv1.Checkpoint, pub ed25519.PublicKey) error {
	if pub == nil {
		k, err := hex.DecodeString(c.GetPublicKey())
		if err != nil || len(k) != ed25519.PublicKeySize {
			return errors.New("the checkpoint names no valid public key")
		}
		pub = k
	} else if c.GetPublicKey() != hex.EncodeToString(pub) {
		return fmt.Errorf("signed by key %.16s…, not the trusted key %.16s…", c.GetPublicKey(), hex.EncodeToString(pub))
	}
	if len(c.GetSignature()) != ed25519.SignatureSize || !ed25519.Verify(pub, checkpointMessage(c), c.GetSignature()) {
		return errors.New("the signature does not verify")
	}
	return nil
}

// maxKeyFileBytes bounds a key file: a PEM Ed25519 key is about 120 bytes.
const maxKeyFileBytes = 16 << 10

// LoadSigningKey reads an Ed25519 private key from a PEM file (PKCS #8, "PRIVATE KEY"): a
// regular file of at most 16 KiB that neither group nor others can read (as internal/secret
// reads tokens).
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("audit signing key %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("audit signing key %s has mode %04o: it must not be readable by group or others (chmod 600 it)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("audit signing key %s is larger than %d bytes", path, maxKeyFileBytes)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("audit signing key %s: not a PEM PRIVATE KEY", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("audit signing key %s: not an Ed25519 key", path)
	}
	return ek, nil
}

// PublicKeyFile is where EnsureSigningKey writes the public half of the key at keyFile:
// beside it, .pem replaced by .pub (audit-signing.pub). Offline verification trusts it, or a
// key given on the command line, and not the key each checkpoint names.
func PublicKeyFile(keyFile string) string {
	return strings.TrimSuffix(keyFile, ".pem") + ".pub"
}

// EnsureSigningKey loads the key at path, minting one (mode 0600, its directory 0700) if
// there is none, and writes its public half to PublicKeyFile(path) (hex, mode 0644) if that
// is missing. `gatehouse up` keeps it under the data directory but outside the audit
// directory.
func EnsureSigningKey(path string) (ed25519.PrivateKey, error) {
	key, err := ensureSigningKey(path)
	if err != nil {
		return nil, err
	}
	pub := PublicKeyFile(path)
	if _, err := os.Stat(pub); errors.Is(err, os.ErrNotExist) {
		f, err := os.OpenFile(pub, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("write audit public key: %w", err)
		}
		if err := errors.Join(writeString(f, hex.EncodeToString(key.Public().(ed25519.PublicKey))+"\n"), f.Sync(), f.Close()); err != nil {
			return nil, fmt.Errorf("write audit public key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("audit public key: %w", err)
	}
	return key, nil
}

func writeString(f *os.File, s string) error {
	_, err := f.WriteString(s)
	return err
}

func ensureSigningKey(path string) (ed25519.PrivateKey, error) {
	if _, err := os.Stat(path); err == nil {
		return LoadSigningKey(path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit signing key: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mint audit signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("mint audit signing key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("mint audit signing key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mint audit signing key: %w", err)
	}
	if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("mint audit signing key: %w", err)
	}
	return key, nil
}

// ParsePublicKey reads an Ed25519 public key given as hex, or as a PEM file's contents
// (PUBLIC KEY, PKIX).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if block, _ := pem.Decode([]byte(s)); block != nil {
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("public key: not Ed25519")
		}
		return ek, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("public key: want 64 hex digits or a PEM PUBLIC KEY")
	}
	return b, nil
}

// Anchor keeps the log's latest checkpoint outside its directory, where whoever edits the
// files cannot reach it.
type Anchor interface {
	// Load returns the anchored checkpoint, nil if there is none.
	Load(ctx context.Context) (*auditv1.Checkpoint, error)
	// Store replaces it with c, unless it holds a later sequence (ErrAnchorAhead): a stale or
	// replayed checkpoint never moves it back.
	Store(ctx context.Context, c *auditv1.Checkpoint) error
	// Reset replaces it whatever it holds. The log uses it once after recording a break at
	// open: the anchor may name records the log no longer has (cut off), and the log goes on
	// from the last record that verified, a lower sequence.
	Reset(ctx context.Context, c *auditv1.Checkpoint) error
}

// head is the last durable record, published by the committer for the checkpointer.
type head struct {
	seq  uint64
	hash string
	seg  string
}

// checkpointer signs the head every CheckpointRecords records or CheckpointInterval, off the
// path of appends: it appends the checkpoint to the checkpoints file (fdatasynced) and stores
// it in the anchor. A failure is logged at ERROR and counted; appends go on.
type checkpointer struct {
	key    ed25519.PrivateKey
	anchor Anchor // nil: none
	every  uint64
	file   *os.File
	signerLoop
	last uint64 // sequence of the last checkpoint (the checkpointer's own)
	// reset: the log recorded a break at open; the next anchored checkpoint replaces the
	// anchor even if it is of a lower sequence (Anchor.Reset).
	reset bool
	// The last line of the file: its index and hash, which the next checkpoint chains to.
	index uint64
	prev  string
}

// openCheckpoints opens the checkpoints file of dir for appending and returns the last
// complete checkpoint in it (nil if none, or if the last line does not parse: the chain then
// starts again, and Verify shows the gap).
func openCheckpoints(dir string) (*os.File, *auditv1.Checkpoint, error) {
	f, err := os.OpenFile(filepath.Join(dir, CheckpointsFileName), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open audit checkpoints: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	// Only the end matters: the last line, and a torn one after it (a crash mid-write), which
	// is cut so that the next checkpoint starts a line.
	from := max(0, st.Size()-2*maxCheckpointLine)
	b := make([]byte, st.Size()-from)
	if _, err := f.ReadAt(b, from); err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	end := bytes.LastIndexByte(b, '\n')
	if end+1 < len(b) {
		if err := f.Truncate(from + int64(end+1)); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cut torn audit checkpoint: %w", err)
		}
	}
	var last *auditv1.Checkpoint
	if end >= 0 {
		line := b[bytes.LastIndexByte(b[:end], '\n')+1 : end]
		var cp auditv1.Checkpoint
		if protojson.Unmarshal(line, &cp) == nil {
			last = &cp
		}
	}
	return f, last, nil
}

// checkpoint signs h and records it. It is called by the checkpointer only (and at open and
// close, when the checkpointer is not running).
func (l *chainLog) checkpoint(h *head) {
	c := l.ckpt
	if h == nil || h.seq == 0 || h.seq == c.last {
		return
	}
	cp := signCheckpoint(c.key, h.seq, h.hash, h.seg, time.Now(), c.index+1, c.prev)
	line, err := protojson.Marshal(cp)
	if err == nil {
		var buf bytes.Buffer
		if err = json.Compact(&buf, line); err == nil {
			buf.WriteByte('\n')
			_, err = c.file.Write(buf.Bytes())
		}
	}
	if err == nil {
		err = dataFile{c.file}.Sync()
	}
	if err != nil {
		l.checkpointFailures.Add(1)
		l.logger.Error("audit checkpoint not written", "path", c.file.Name(), "sequence", h.seq, "err", err)
		return
	}
	c.last, c.index, c.prev = h.seq, cp.Index, checkpointHash(cp)
	l.checkpoints.Add(1)
	if c.anchor == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), anchorTimeout)
	defer cancel()
	store := c.anchor.Store
	if c.reset {
		store = c.anchor.Reset
	}
	if err := store(ctx, cp); err != nil {
		l.checkpointFailures.Add(1)
		l.logger.Error("audit checkpoint not anchored", "sequence", h.seq, "err", err)
		return
	}
	c.reset = false
}

// signerLoop runs a store's signer: sign at each interval and each wake, until ended. Both
// stores' checkpointers embed it.
type signerLoop struct {
	interval time.Duration
	wake     chan struct{} // of one slot: a wake while signing is kept, more are one
	stop     chan struct{}
	done     chan struct{}
}

func newSignerLoop(interval time.Duration) signerLoop {
	return signerLoop{interval: interval, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// run calls sign at each interval and each wake until end; it is the signer's goroutine.
func (c *signerLoop) run(sign func()) {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.wake:
		}
		sign()
	}
}

// poke wakes the signer, unless a wake is already pending.
func (c *signerLoop) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// end stops the loop and waits until it has; called once.
func (c *signerLoop) end() {
	close(c.stop)
	<-c.done
}

// noteHead publishes the committer's head and wakes the checkpointer every `every` records.
func (l *chainLog) noteHead() {
	if l.ckpt == nil {
		return
	}
	h := &head{seq: l.seq, hash: string(l.prev), seg: l.headSeg}
	l.head.Store(h)
	if h.seq-l.ckptNoted >= l.ckpt.every {
		l.ckptNoted = h.seq
		l.ckpt.poke()
	}
}

// checkpointReader reads the checkpoints file one line at a time: Verify checks each against
// the walk as it goes, holding none of them.
type checkpointReader struct {
	f  *os.File
	br *bufio.Reader
	n  uint64 // lines read
}

// openCheckpointReader opens the checkpoints file of dir; nil when there is none.
func openCheckpointReader(dir string) (*checkpointReader, error) {
	f, err := os.Open(filepath.Join(dir, CheckpointsFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	return &checkpointReader{f: f, br: bufio.NewReaderSize(f, maxCheckpointLine)}, nil
}

func (r *checkpointReader) close() {
	if r != nil {
		r.f.Close()
	}
}

// next returns the next checkpoint and its line number, or a line that is not one as a
// problem (bad), or io.EOF at the end. An incomplete last line (being written, or torn by a
// crash) is the end.
func (r *checkpointReader) next() (cp *auditv1.Checkpoint, line uint64, bad *ChainError, err error) {
	if r == nil {
		return nil, 0, nil, io.EOF
	}
	b, err := r.br.ReadSlice('\n')
	if errors.Is(err, io.EOF) {
		return nil, 0, nil, io.EOF
	}
	r.n++
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = r.br.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, nil, fmt.Errorf("read audit checkpoints: %w", err)
		}
		return nil, r.n, &ChainError{Kind: KindBadSignature, Segment: CheckpointsFileName, Line: r.n,
			Reason: fmt.Sprintf("checkpoint line %d is longer than %d bytes", r.n, maxCheckpointLine)}, nil
	}
	if err != nil {
		return nil, 0, nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	var c auditv1.Checkpoint
	if err := protojson.Unmarshal(b, &c); err != nil {
		return nil, r.n, &ChainError{Kind: KindBadSignature, Segment: CheckpointsFileName, Line: r.n,
			Reason: fmt.Sprintf("checkpoint line %d does not parse: %v", r.n, err)}, nil
	}
	return &c, r.n, nil, nil
}

// startCheckpoints starts signing the head with key: a checkpoint of the head as opened
// (recovery may have written records, or the previous run may have stopped before its last
// checkpoint), then every `every` records or interval.
func (l *chainLog) startCheckpoints(key ed25519.PrivateKey, anchor Anchor, every uint64, interval time.Duration) error {
	f, last, err := openCheckpoints(l.dir)
	if err != nil {
		return err
	}
	l.ckpt = &checkpointer{key: key, anchor: anchor, every: every, file: f, signerLoop: newSignerLoop(interval), reset: l.breaks.Load() > 0}
	if last != nil {
		l.ckpt.index, l.ckpt.prev = last.GetIndex(), checkpointHash(last)
	}
	l.ckptNoted = l.seq
	// The head is the last record's segment, not the one appended to: after a rotation the
	// latter is still empty. Stored, so that close signs it again if nothing was appended
	// (checkpoint skips a sequence already signed).
	h := &head{seq: l.seq, hash: string(l.prev), seg: l.headSeg}
	if h.seq > 0 {
		l.head.Store(h)
	}
	l.checkpoint(h)
	go l.ckpt.run(func() { l.checkpoint(l.head.Load()) })
	return nil
}

// stopCheckpointer stops the checkpointer once the writer is done, signs the final head and
// closes the checkpoints file. It is called once, by close.
func (l *chainLog) stopCheckpointer() {
	c := l.ckpt
	if c == nil {
		return
	}
	c.end()
	l.checkpoint(l.head.Load())
	_ = c.file.Close()
}
