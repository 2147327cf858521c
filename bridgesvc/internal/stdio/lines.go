package stdio

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

var errLineTooLong = errors.New("line too long")

// lineReader reads newline-delimited lines of bounded length.
type lineReader struct {
	br  *bufio.Reader
	max int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, min(max+1, 64<<10)), max: max}
}

// next returns the next line without its terminator (LF or CRLF) in a slice of its own. A
// final line without a terminator is returned before io.EOF. A line over max bytes is an
// errLineTooLong, returned as soon as the limit is passed (nothing more is buffered).
func (r *lineReader) next() ([]byte, error) {
	var acc []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			var line []byte
			if acc == nil {
				line = bytes.Clone(trimEOL(chunk))
			} else {
				line = trimEOL(append(acc, chunk...))
			}
			if len(line) > r.max {
				return nil, errLineTooLong
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			// One byte of slack for the CR of a CRLF.
			if len(acc)+len(chunk) > r.max+1 {
				return nil, errLineTooLong
			}
			acc = append(acc, chunk...)
		case errors.Is(err, io.EOF) && len(acc)+len(chunk) > 0:
			if len(acc)+len(chunk) > r.max {
				return nil, errLineTooLong
			}
			return append(acc, chunk...), nil
		default:
			return nil, err
		}
	}
}

// nextTruncated returns the next line cut to max bytes; the rest of a longer line is read
// and dropped.
func (r *lineReader) nextTruncated() ([]byte, error) {
	chunk, err := r.br.ReadSlice('\n')
	line := bytes.Clone(trimEOL(chunk))
	if len(line) > r.max {
		line = line[:r.max]
	}
	for errors.Is(err, bufio.ErrBufferFull) {
		_, err = r.br.ReadSlice('\n')
	}
	if errors.Is(err, io.EOF) && len(line) > 0 {
		err = nil
	}
	return line, err
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
