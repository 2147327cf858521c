package oidcpeer

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestLaunchPortTaken: a provider whose port another process took exits with exitPortTaken,
// which launch reports as errPortTaken (Start then tries another port, Restart fails), and
// leaves nothing running.
func TestLaunchPortTaken(t *testing.T) {
	p := Start(t, Options{Clients: []Client{{ID: "svc", Secret: "s"}}})
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
	if err != nil {
		t.Fatalf("take the stopped provider's port: %v", err)
	}
	defer ln.Close()
	err = p.launch()
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("launch on a taken port: %v, want errPortTaken", err)
	}
	if p.proc != nil {
		t.Fatal("a failed launch left a process")
	}
}

func TestReadyWriter(t *testing.T) {
	cases := []struct {
		name   string
		writes []string
		want   string // "" for no line yet
	}{
		{"whole line", []string{"READY http://127.0.0.1:1\nmore\n"}, "READY http://127.0.0.1:1"},
		{"split line", []string{"REA", "DY x", "\n"}, "READY x"},
		{"no newline yet", []string{"READY x"}, ""},
		{"overlong line", []string{strings.Repeat("a", maxReadyLine+1)}, strings.Repeat("a", maxReadyLine)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			w := &readyWriter{out: &out, line: make(chan string, 1)}
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			var got string
			select {
			case got = <-w.line:
			default:
			}
			if got != tc.want || out.String() != strings.Join(tc.writes, "") {
				t.Fatalf("line %q, copied %q", got, out.String())
			}
		})
	}
}
