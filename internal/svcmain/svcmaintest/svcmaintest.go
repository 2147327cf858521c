// Package svcmaintest helps the tests of binaries built on svcmain.Main.
package svcmaintest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// WaitServing waits until out (what run writes) holds the "serving" line svcmain.Main logs
// once it listens, and returns the address it names. It fails the test if done (run's
// result) arrives first, or after timeout.
func WaitServing(t testing.TB, out fmt.Stringer, done <-chan error, timeout time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				return line.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before serving: %v\n%s", err, out.String())
		case <-deadline.C:
			t.Fatalf("not serving after %s; output:\n%s", timeout, out.String())
		case <-tick.C:
		}
	}
}
