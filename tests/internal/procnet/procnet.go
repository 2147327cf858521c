// Package procnet tells, from Linux's /proc, whether a given process is the one listening on
// a TCP port. A test that picks a free port, releases it and starts a server there must know
// that its server, and not another process that took the port meanwhile, is the one that
// answers: a successful connection alone cannot tell them apart. FreePort picks the port.
package procnet

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FreePort returns a loopback TCP port that was free a moment ago. Another process may take
// it before the caller's server binds it: the caller checks with Listening (or the server's
// exit) and tries another port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tcpListen is the state column of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// Listening reports whether process pid holds a listening TCP socket (IPv4 or IPv6) on port.
func Listening(pid, port int) (bool, error) {
	inodes := map[string]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		if err := listeners(filepath.Join("/proc", strconv.Itoa(pid), "net", table), port, inodes); err != nil {
			return false, err
		}
	}
	if len(inodes) == 0 {
		return false, nil
	}
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false, fmt.Errorf("list the fds of %d: %w", pid, err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true, nil
		}
	}
	return false, nil
}

// listeners adds to inodes the socket inodes of table's listening sockets on port.
func listeners(table string, port int, inodes map[string]bool) error {
	f, err := os.Open(table)
	if os.IsNotExist(err) {
		return nil // no IPv6 on this machine, or the process is gone
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != tcpListen || !strings.HasSuffix(fields[1], want) {
			continue
		}
		inodes[fields[9]] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	return nil
}
