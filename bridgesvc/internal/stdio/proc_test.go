package stdio

import (
	"os"
	"testing"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 99887766 18 19"
	tests := []struct {
		name string
		in   string
		want procStat
		bad  bool
	}{
		{name: "plain", in: "42 (server) S 7 42 1" + tail, want: procStat{pid: 42, ppid: 7, pgid: 42, sid: 1, state: 'S', start: 99887766}},
		{name: "name with parentheses and spaces", in: "42 (a) Z 1 2 3 (b)) Z 7 42 1" + tail, want: procStat{pid: 42, ppid: 7, pgid: 42, sid: 1, state: 'Z', start: 99887766}},
		{name: "no parenthesis", in: "42 server S 7 42 1" + tail, bad: true},
		{name: "truncated", in: "42 (server) S 7 42 1 1 2", bad: true},
		{name: "not a number", in: "42 (server) S x 42 1" + tail, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(42, []byte(tc.in))
			if tc.bad {
				if err == nil {
					t.Fatalf("parseStat = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseStat = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	self, err := readStat(os.Getpid())
	if err != nil || self.ppid != os.Getppid() || self.start == 0 {
		t.Fatalf("readStat(self) = %+v, %v", self, err)
	}
}
