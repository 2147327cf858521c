package query

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"

	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	"google.golang.org/protobuf/proto"
)

// Bounds of one Query request.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxScan is the most lines one request reads: a filter that matches little returns a
	// short page (or an empty one) with a token rather than reading the whole log at once.
	MaxScan = 20000
)

// Engine answers queries over a log. Its page tokens are signed with a key of its own: a
// token another engine issued (another process, a restart) or anyone edited is refused.
type Engine struct {
	r       Source
	key     []byte
	maxScan int
}

// Source is what an Engine reads: the file store's segments (Reader) or another store's
// records (auditsvc's PostgreSQL reader).
type Source interface {
	// Scan reads from pos at most max records and gives each to visit, as Reader.Scan does.
	// filter is the query's, already checked: a source may pass over records it cannot
	// match without giving them to visit (the Engine still matches what it is given), but
	// max bounds the records it examines, given or not.
	Scan(ctx context.Context, filter *auditv1.Filter, pos Position, max int, visit Visit) (Position, bool, error)
}

// fileSource is a Reader as a Source: it gives every record (the Engine matches them).
type fileSource struct{ r *Reader }

func (s fileSource) Scan(ctx context.Context, _ *auditv1.Filter, pos Position, max int, visit Visit) (Position, bool, error) {
	return s.r.Scan(ctx, pos, max, visit)
}

// NewEngine answers queries by reading r.
func NewEngine(r *Reader) *Engine { return NewSourceEngine(fileSource{r}) }

// NewSourceEngine answers queries by reading src.
func NewSourceEngine(src Source) *Engine {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &Engine{r: src, key: key, maxScan: MaxScan}
}

// SetMaxScan changes the most lines one request reads (tests).
func (e *Engine) SetMaxScan(n int) { e.maxScan = n }

// Query returns one page of the records that match req's filter.
func (e *Engine) Query(ctx context.Context, req *auditv1.QueryRequest) (*auditv1.QueryResponse, error) {
	m, err := newMatcher(req.GetFilter())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		return nil, invalid("page size %d is above the maximum, %d", size, MaxPageSize)
	}
	fd := filterDigest(m.f)
	var pos Position
	if t := req.GetPageToken(); t != "" {
		if pos, err = e.openToken(t, fd); err != nil {
			return nil, err
		}
	}
	resp := &auditv1.QueryResponse{}
	end, eof, err := e.r.Scan(ctx, m.f, pos, e.maxScan, func(seq uint64, raw []byte, next Position) (bool, error) {
		resp.Scanned++
		rec, ok, err := m.match(raw)
		if err != nil {
			return false, err
		}
		if ok {
			resp.Entries = append(resp.Entries, &auditv1.Entry{Sequence: seq, Record: rec})
		}
		return len(resp.Entries) < size, nil
	})
	if err != nil {
		return nil, err
	}
	if !eof {
		resp.NextPageToken = e.sealToken(end, fd)
	}
	return resp, nil
}

// filterDigest binds a token to its filter: a token is only good for the query it paged.
func filterDigest(f *auditv1.Filter) [32]byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	return sha256.Sum256(b)
}

// A token is base64url(version 1 | seq | offset | len(file) | file | filter digest | HMAC).
const tokenVersion = 1

// maxTokenBytes bounds a token read.
const maxTokenBytes = 1024

func (e *Engine) sealToken(p Position, fd [32]byte) string {
	b := []byte{tokenVersion}
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Offset))
	if len(p.File) > 255 {
		p.File = "" // only a hint: reading falls back to finding the sequence
	}
	b = append(b, byte(len(p.File)))
	b = append(b, p.File...)
	b = append(b, fd[:]...)
	mac := hmac.New(sha256.New, e.key)
	mac.Write(b)
	return base64.RawURLEncoding.EncodeToString(mac.Sum(b))
}

func (e *Engine) openToken(t string, fd [32]byte) (Position, error) {
	bad := invalid("page token not issued by this audit service for this filter (tokens do not outlive a restart)")
	if len(t) > maxTokenBytes {
		return Position{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil || len(b) < 1+8+8+1+32+sha256.Size {
		return Position{}, bad
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	mac := hmac.New(sha256.New, e.key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) || body[0] != tokenVersion {
		return Position{}, bad
	}
	n := int(body[17])
	if len(body) != 18+n+32 || !hmac.Equal(body[18+n:], fd[:]) {
		return Position{}, bad
	}
	return Position{
		Seq:    binary.BigEndian.Uint64(body[1:9]),
		Offset: int64(binary.BigEndian.Uint64(body[9:17])),
		File:   string(body[18 : 18+n]),
	}, nil
}
