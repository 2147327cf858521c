// Package query reads an audit log's committed records, in order, with handles of its own:
// the filters, pages and resume tokens of AuditService.Query, the follow of Tail, and the
// same over a data directory for the offline CLI (gatehouse audit --data-dir).
//
// It knows the log's files only through Files and each line only through its "seq" and
// "record" members, so that the store's own layout (segments, checkpoint lines) can change
// under it: a line without a record is skipped.
package query

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Files lists a log's files in order, oldest first, as paths.
type Files func() ([]string, error)

// Position is where reading resumes: the next sequence to read, and where its line is
// thought to start (a hint, checked before it is used: a file's base name and a byte offset).
type Position struct {
	Seq    uint64
	File   string
	Offset int64
}

// Reader reads the records of a log in order.
type Reader struct {
	files Files
	// committed is the last sequence known durable; nil: every complete line counts (a log
	// read offline).
	committed func() uint64
}

// NewReader reads the log whose files are files. committed, when not nil, is the last
// durable sequence: records after it are not read (they may yet be cut away).
func NewReader(files Files, committed func() uint64) *Reader {
	return &Reader{files: files, committed: committed}
}

// maxLineBytes bounds one line read, as the store bounds it.
const maxLineBytes = 1 << 20

// Visit is given each record read: its sequence, its JSON (valid during the call only) and
// the position after it. It returns false to stop before the next record.
type Visit func(seq uint64, record []byte, next Position) (bool, error)

// Scan reads from pos at most max lines (records and others alike: the work of one call is
// bounded) and gives each record to visit. It returns where it stopped and whether it
// reached the end of what is committed.
func (r *Reader) Scan(ctx context.Context, pos Position, max int, visit Visit) (Position, bool, error) {
	if pos.Seq == 0 {
		pos = Position{Seq: 1}
	}
	limit := uint64(1<<64 - 1)
	if r.committed != nil {
		limit = r.committed()
	}
	if pos.Seq > limit {
		return pos, true, nil
	}
	files, err := r.files()
	if err != nil {
		return pos, false, fmt.Errorf("list audit files: %w", err)
	}
	i, offset, err := locate(files, pos)
	if err != nil {
		return pos, false, err
	}
	if i < 0 {
		return pos, true, nil // nothing at or after pos yet
	}
	lines := 0
	for ; i < len(files); i, offset = i+1, 0 {
		f, err := os.Open(files[i])
		if err != nil {
			return pos, false, fmt.Errorf("open audit file: %w", err)
		}
		p, end, err := scanFile(ctx, f, filepath.Base(files[i]), offset, pos, limit, &lines, max, visit)
		f.Close()
		pos = p
		if err != nil || end != endOfFile {
			return pos, end == endOfCommitted, err
		}
	}
	return pos, true, nil
}

// Where scanFile stopped.
const (
	stopped        = iota // the visitor or the budget stopped it
	endOfFile             // the file is read: go on with the next
	endOfCommitted        // the next line is not committed yet
)

// scanFile reads f from offset, the end saying where it stopped.
func scanFile(ctx context.Context, f *os.File, name string, offset int64, pos Position, limit uint64, lines *int, max int, visit Visit) (Position, int, error) {
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return pos, stopped, fmt.Errorf("seek audit file: %w", err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	at := offset
	for {
		if *lines >= max {
			return pos, stopped, nil
		}
		if *lines%256 == 0 && ctx.Err() != nil {
			return pos, stopped, ctx.Err()
		}
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			// A line without its newline is still being written: it is read next time.
			return pos, endOfFile, nil
		}
		if err != nil {
			return pos, stopped, fmt.Errorf("read audit file %s at %d: %w", name, at, err)
		}
		next := at + int64(len(line))
		seq, record, ok := parseLine(line)
		if !ok || seq < pos.Seq {
			at = next // not a record (a checkpoint, say), or before where reading resumes
			continue
		}
		if seq > limit {
			return pos, endOfCommitted, nil
		}
		*lines++
		at = next
		np := Position{Seq: seq + 1, File: name, Offset: next}
		goOn, err := visit(seq, record, np)
		pos = np
		if err != nil || !goOn {
			return pos, stopped, err
		}
	}
}

// readLine reads one whole line, newline included; io.EOF if none is complete.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			if len(long) > maxLineBytes {
				return nil, fmt.Errorf("line longer than %d bytes", maxLineBytes)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if long != nil {
			return append(long, line...), nil
		}
		return line, nil
	}
}

// ParseLine returns the sequence and record (its JSON) of a log line, as the file store and
// the PostgreSQL store write it; false when it is not one.
func ParseLine(line []byte) (uint64, []byte, bool) { return parseLine(line) }

// parseLine returns the sequence and record of a log line ({"seq":N,...,"record":{...},...}).
func parseLine(line []byte) (uint64, []byte, bool) {
	var l struct {
		Seq    uint64          `json:"seq"`
		Record json.RawMessage `json:"record"`
	}
	if err := json.Unmarshal(line, &l); err != nil || l.Seq == 0 || len(l.Record) == 0 || l.Record[0] != '{' {
		return 0, nil, false
	}
	return l.Seq, l.Record, true
}

// lineSeq reads the sequence at the start of a line without decoding the rest.
func lineSeq(line []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"seq":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return n, err == nil
}

// locate finds the file and offset to read pos from: the hint when the line there has pos's
// sequence (or the hint is the end of the last file), else the last file whose first record
// is at or before pos (read from its start; records before pos are skipped). -1: the log has
// no file yet.
func locate(files []string, pos Position) (int, int64, error) {
	if len(files) == 0 {
		return -1, 0, nil
	}
	if pos.File != "" {
		if i := slices.IndexFunc(files, func(p string) bool { return filepath.Base(p) == pos.File }); i >= 0 {
			if ok, err := hintHolds(files[i], pos, i == len(files)-1); err != nil {
				return 0, 0, err
			} else if ok {
				return i, pos.Offset, nil
			}
		}
	}
	chosen := 0
	var prev uint64 // the first sequence of the last file that has one
	for i, p := range files {
		first, ok, err := firstSeq(p)
		if err != nil {
			return 0, 0, err
		}
		if ok && first == prev {
			// Two files claiming the same records: which one is the log is for Verify to say,
			// not for a reader to guess.
			return 0, 0, fmt.Errorf("audit files %s and %s both begin at sequence %d: verify the log", filepath.Base(files[chosen]), filepath.Base(p), first)
		}
		if ok && first > pos.Seq {
			break
		}
		if ok {
			chosen, prev = i, first
		}
	}
	return chosen, 0, nil
}

// hintHolds reports whether the line at pos.Offset of path has sequence pos.Seq, or the
// offset is the end of the last file (nothing committed there yet).
func hintHolds(path string, pos Position, last bool) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("open audit file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	if pos.Offset < 0 || pos.Offset > st.Size() {
		return false, nil
	}
	if pos.Offset == st.Size() {
		return last, nil
	}
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, pos.Offset)
	seq, ok := lineSeq(buf[:n])
	return ok && seq == pos.Seq, nil
}

// firstSeq is the sequence of the first line of path that has one.
func firstSeq(path string) (uint64, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false, fmt.Errorf("open audit file: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 4096)
	for range 16 { // a few non-record lines (a segment header, a checkpoint) may come first
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, false, nil
			}
			return 0, false, err
		}
		if seq, ok := lineSeq(line); ok && strings.Contains(string(line[:min(len(line), 4096)]), `"record":`) {
			return seq, true, nil
		}
	}
	return 0, false, nil
}
