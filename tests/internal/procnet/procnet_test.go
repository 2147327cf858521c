package procnet_test

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/procnet"
)

// TestListening: this process listens on its own listener's port, and not on a port where
// only another process listens, nor on one nobody listens on.
func TestListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if ok, err := procnet.Listening(os.Getpid(), port); err != nil || !ok {
		t.Fatalf("Listening(self, %d) = %v, %v; want true", port, ok, err)
	}
	// A child process (sleep) does not hold our socket.
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	if ok, err := procnet.Listening(child.Process.Pid, port); err != nil || ok {
		t.Fatalf("Listening(child, %d) = %v, %v; want false", port, ok, err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := free.Addr().(*net.TCPAddr).Port
	free.Close()
	if ok, err := procnet.Listening(os.Getpid(), freePort); err != nil || ok {
		t.Fatalf("Listening(self, closed port %d) = %v, %v; want false", freePort, ok, err)
	}
}
