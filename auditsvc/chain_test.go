package auditsvc

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
)

// buildLog returns a valid log of the given records (compact JSON objects).
func buildLog(records ...string) []byte {
	h := sha256.New()
	var buf []byte
	prev := genesis
	for i, r := range records {
		buf, prev = appendLine(h, buf, uint64(i+1), prev, []byte(r))
	}
	return buf
}

func TestScan(t *testing.T) {
	t.Parallel()
	big := `{"error":"` + strings.Repeat("x", 200<<10) + `"}` // longer than the reader's buffer
	valid := buildLog(`{"a":1}`, big, `{"b":2}`)
	tests := []struct {
		name     string
		data     []byte
		wantSeq  uint64
		wantTorn int64
		wantErr  uint64 // the ChainError's sequence; 0 for none
	}{
		{"empty", nil, 0, 0, 0},
		{"valid with a long line", valid, 3, 0, 0},
		{"torn", append(append([]byte(nil), valid...), `{"seq":4`...), 3, 8, 0},
		{"line over the limit", append(append([]byte(nil), valid...), bytes.Repeat([]byte("y"), maxLineBytes+10)...), 3, 0, 4},
		{"leading zero in seq", bytes.Replace(buildLog(`{}`), []byte(`"seq":1`), []byte(`"seq":01`), 1), 0, 0, 1},
		{"empty line", append(append([]byte(nil), valid...), '\n'), 3, 0, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, torn, err := scan(bytes.NewReader(tt.data), nil)
			var ce *ChainError
			if tt.wantErr != 0 {
				if !errors.As(err, &ce) || ce.Seq != tt.wantErr {
					t.Fatalf("err = %v, want a chain error at %d", err, tt.wantErr)
				}
				return
			}
			if err != nil || st.seq != tt.wantSeq || torn != tt.wantTorn {
				t.Fatalf("scan = seq %d torn %d err %v; want seq %d torn %d", st.seq, torn, err, tt.wantSeq, tt.wantTorn)
			}
			if torn == 0 && st.size != int64(len(tt.data)) {
				t.Fatalf("size %d, want %d", st.size, len(tt.data))
			}
		})
	}
}

// FuzzScan: whatever a damaged or tampered file holds, scan neither panics nor accepts
// bytes that are not a chain it could have written.
func FuzzScan(f *testing.F) {
	valid := buildLog(`{"a":1}`, `{"b":"x"}`, `{}`)
	f.Add(valid)
	f.Add(valid[:len(valid)-5])
	f.Add(bytes.Replace(valid, []byte(`"a":1`), []byte(`"a":2`), 1))
	f.Add([]byte("{\"seq\":1,\"prev\":\"\",\"record\":{},\"hash\":\"\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var visited []string
		st, torn, err := scan(bytes.NewReader(data), func(seq uint64, offset int64, record []byte) error {
			if seq != uint64(len(visited)+1) || !bytes.Equal(data[offset:offset+int64(len(record))], record) {
				t.Fatalf("visit(%d, %d, %q): not the record at that offset", seq, offset, record)
			}
			visited = append(visited, string(record))
			return nil
		})
		if err != nil {
			return
		}
		if st.size+torn != int64(len(data)) {
			t.Fatalf("size %d + torn %d != %d", st.size, torn, len(data))
		}
		// Re-encoding the verified lines must give back exactly the verified bytes.
		var records []string
		for _, l := range bytes.SplitAfter(data[:st.size], []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			_, rest, _ := bytes.Cut(l, []byte(recordField))
			records = append(records, string(rest[:len(rest)-tailLen-1]))
		}
		if !slices.Equal(visited, records) {
			t.Fatalf("visited %q, want the records %q", visited, records)
		}
		if got := buildLog(records...); !bytes.Equal(got, data[:st.size]) {
			t.Fatalf("verified bytes are not what appendLine writes:\n%q\n%q", data[:st.size], got)
		}
	})
}
