package auditsvc

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// The log file is JSON lines, one record per line, each chained to the one before:
//
//	{"seq":N,"prev":"<hex>","record":<protojson>,"hash":"<hex>"}
//
// hash = SHA-256(prev || canonical), both hex, where canonical is the line without its
// hash member: {"seq":N,"prev":"<hex>","record":<protojson>}. The first record's prev is
// genesis (64 zeros). The record is stored compacted, exactly as hashed, so verifying never
// re-encodes anything: it hashes the bytes on disk.
const (
	hashHexLen  = sha256.Size * 2
	hashSuffix  = `,"hash":"` // then hashHexLen hex digits and `"}`
	tailLen     = len(hashSuffix) + hashHexLen + len(`"}`)
	seqPrefix   = `{"seq":`
	prevPrefix  = `,"prev":"`
	recordField = `","record":`
)

// genesis is the prev of the first record.
var genesis = bytes.Repeat([]byte{'0'}, hashHexLen)

// maxLineBytes bounds one line when reading a log; Append bounds records well below it.
const maxLineBytes = 1 << 20

// ChainError says where a log stops verifying: the first line that is malformed, out of
// sequence, not chained to its predecessor, or whose hash does not match its content. A walk
// of the segments also uses it for what else it finds (Kind).
type ChainError struct {
	// Kind is what was found: KindBroken unless a walk says otherwise.
	Kind string
	// Segment is the segment file's name, when known.
	Segment string
	// Seq is the sequence the failing line should have had (its position, from 1).
	Seq uint64
	// Line is the line's number in its segment, from 1, when known.
	Line uint64
	// Offset is the byte offset of that line in the file.
	Offset int64
	// Reason says what is wrong.
	Reason string
}

func (e *ChainError) Error() string {
	where := ""
	if e.Segment != "" {
		where = fmt.Sprintf("%s line %d, ", e.Segment, e.Line)
	}
	what := "audit log chain broken"
	if e.Kind != "" && e.Kind != KindBroken {
		what = "audit log " + strings.ReplaceAll(e.Kind, "_", " ")
	}
	return fmt.Sprintf("%s at sequence %d (%sbyte offset %d): %s", what, e.Seq, where, e.Offset, e.Reason)
}

// chainState is where a verified log ends.
type chainState struct {
	seq  uint64 // last sequence; 0 for an empty log
	hash []byte // last hash, hex; genesis for an empty log
	size int64  // bytes of complete, verified lines
}

// scan verifies every complete line of r. It returns the state after the last one, and the
// length of a trailing partial line (no newline: a torn write), which it does not judge. If
// visit is not nil it is given each verified line's sequence, the byte offset of its record
// in r and the record (valid only during the call).
func scan(r io.Reader, visit func(seq uint64, offset int64, record []byte) error) (chainState, int64, error) {
	var v func(uint64, int64, []byte, []byte) error
	if visit != nil {
		v = func(seq uint64, offset int64, record, _ []byte) error { return visit(seq, offset, record) }
	}
	return scanFrom(r, chainState{hash: append([]byte(nil), genesis...)}, v)
}

// scanFrom is scan of a segment whose first line follows start (its seq and hash; its size
// is the offset of r's first byte). visit also gets each line's hash.
func scanFrom(r io.Reader, start chainState, visit func(seq uint64, offset int64, record, hash []byte) error) (chainState, int64, error) {
	st := start
	st.hash = append([]byte(nil), start.hash...)
	br := bufio.NewReaderSize(r, 64<<10)
	h := sha256.New()
	var long []byte // a line longer than the reader's buffer, assembled
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			if len(long) > maxLineBytes {
				return st, 0, &ChainError{Seq: st.seq + 1, Offset: st.size, Reason: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
			}
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > maxLineBytes {
			return st, 0, &ChainError{Seq: st.seq + 1, Offset: st.size, Reason: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
		}
		if errors.Is(err, io.EOF) {
			return st, int64(len(line)), nil
		}
		if err != nil {
			return st, 0, fmt.Errorf("read audit log: %w", err)
		}
		hash, at, reason := verifyLine(h, line[:len(line)-1], st.seq+1, st.hash)
		if reason != "" {
			return st, 0, &ChainError{Seq: st.seq + 1, Offset: st.size, Reason: reason}
		}
		if visit != nil {
			if err := visit(st.seq+1, st.size+int64(at), line[at:len(line)-1-tailLen], hash); err != nil {
				return st, 0, err
			}
		}
		st.seq++
		st.hash = append(st.hash[:0], hash...)
		st.size += int64(len(line))
	}
}

// verifyLine checks one line (without its newline) against the expected sequence and prev.
// It returns the line's hash and where its record starts, or why the line does not verify.
func verifyLine(h hashWriter, line []byte, seq uint64, prev []byte) ([]byte, int, string) {
	if len(line) < tailLen || !bytes.HasSuffix(line, []byte(`"}`)) ||
		!bytes.Equal(line[len(line)-tailLen:len(line)-tailLen+len(hashSuffix)], []byte(hashSuffix)) {
		return nil, 0, "malformed line: no hash"
	}
	body := line[:len(line)-tailLen]
	stored := line[len(line)-tailLen+len(hashSuffix) : len(line)-2]
	rest, ok := bytes.CutPrefix(body, []byte(seqPrefix))
	if !ok {
		return nil, 0, "malformed line: no seq"
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return nil, 0, "malformed line: no prev"
	}
	got, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil || strconv.FormatUint(got, 10) != string(rest[:i]) {
		return nil, 0, "malformed line: bad seq"
	}
	if got != seq {
		return nil, 0, fmt.Sprintf("sequence %d where %d was expected", got, seq)
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(prevPrefix))
	if !ok || len(rest) < hashHexLen {
		return nil, 0, "malformed line: no prev"
	}
	if !bytes.Equal(rest[:hashHexLen], prev) {
		return nil, 0, "prev does not match the previous record's hash"
	}
	if !bytes.HasPrefix(rest[hashHexLen:], []byte(recordField)) {
		return nil, 0, "malformed line: no record"
	}
	sum := chainHash(h, prev, body)
	if !bytes.Equal(sum, stored) {
		return nil, 0, "hash does not match the record"
	}
	return sum, len(body) - len(rest) + hashHexLen + len(recordField), ""
}

type hashWriter interface {
	io.Writer
	Reset()
	Sum([]byte) []byte
}

// chainHash is hex(SHA-256(prev || body || "}")), body being the canonical line without its
// closing brace.
func chainHash(h hashWriter, prev, body []byte) []byte {
	h.Reset()
	h.Write(prev)
	h.Write(body)
	h.Write([]byte{'}'})
	var sum [sha256.Size]byte
	return hex.AppendEncode(nil, h.Sum(sum[:0]))
}

// appendLine appends the line for record (compact protojson) at seq after prev to buf, and
// returns the new buf and the line's hash.
func appendLine(h hashWriter, buf []byte, seq uint64, prev, record []byte) ([]byte, []byte) {
	start := len(buf)
	buf = append(buf, seqPrefix...)
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, prevPrefix...)
	buf = append(buf, prev...)
	buf = append(buf, recordField...)
	buf = append(buf, record...)
	sum := chainHash(h, prev, buf[start:])
	buf = append(buf, hashSuffix...)
	buf = append(buf, sum...)
	buf = append(buf, `"}`...)
	buf = append(buf, '\n')
	return buf, sum
}

// Verify checks the whole chain of the log file at path and returns how many records it
// holds. A break is a *ChainError naming the first bad sequence. A log whose last line is
// incomplete (a write torn by a crash) is reported as an error too; New truncates it away.
func Verify(path string) (n uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("verify audit log: %w", err)
	}
	defer f.Close()
	st, torn, err := scan(f, nil)
	if err != nil {
		return st.seq, err
	}
	if torn > 0 {
		return st.seq, fmt.Errorf("audit log %s ends with an incomplete line (%d bytes after sequence %d)", path, torn, st.seq)
	}
	return st.seq, nil
}
