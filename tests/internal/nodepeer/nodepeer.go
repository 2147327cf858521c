// Package nodepeer runs the official Node MCP peers for the end-to-end tests: the TypeScript SDK
// client (tests/node/client.mjs), @modelcontextprotocol/server-everything and the official
// conformance suite, all with the Node 22 runtime that tests/node/install.sh installs from the
// npm registry exactly as tests/node/package-lock.json pins it.
//
// The peers are never installed by the tests themselves: CI runs tests/node/install.sh first,
// and a missing or stale install fails the test with that instruction.
package nodepeer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// installHint is appended to every error about a missing or stale install.
const installHint = "run tests/node/install.sh"

// stampFile is written by install.sh after a successful `npm ci`; it holds the SHA-256 of
// package.json followed by package-lock.json.
const stampFile = "node_modules/.gatehouse-install-stamp"

// Dir returns the absolute path of the tests/node directory, found by walking up from the
// working directory (a test runs in its package directory, somewhere under tests/ or the
// repository root).
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locate tests/node: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		for _, candidate := range []string{filepath.Join(dir, "node"), filepath.Join(dir, "tests", "node")} {
			if isPeerDir(candidate) {
				return candidate, nil
			}
		}
		if parent := filepath.Dir(dir); parent == dir {
			return "", fmt.Errorf("locate tests/node: no directory with client.mjs and install.sh above %s", wd)
		}
	}
}

func isPeerDir(dir string) bool {
	for _, name := range []string{"package.json", "install.sh", "client.mjs"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

var (
	checkOnce sync.Once
	checkDir  string
	checkNode string
	checkErr  error
)

// Node22 returns the absolute path of the Node 22 binary installed in tests/node. It fails the
// test (never skips: CI always installs) when the install is missing, stale (package.json or
// the lock file changed since install.sh last ran) or not Node 22.
func Node22(t testing.TB) string {
	t.Helper()
	_, node, err := installed()
	if err != nil {
		t.Fatalf("nodepeer: %v", err)
	}
	return node
}

// installed checks the install once per test process.
func installed() (dir, node string, err error) {
	checkOnce.Do(func() {
		checkDir, checkNode, checkErr = checkInstall()
	})
	return checkDir, checkNode, checkErr
}

func checkInstall() (string, string, error) {
	dir, err := Dir()
	if err != nil {
		return "", "", err
	}
	node := filepath.Join(dir, "node_modules", "node", "bin", "node")
	if _, err := os.Stat(node); err != nil {
		return "", "", fmt.Errorf("Node 22 not installed at %s: %s", node, installHint)
	}
	want, err := installDigest(dir)
	if err != nil {
		return "", "", err
	}
	got, err := os.ReadFile(filepath.Join(dir, stampFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("no install stamp in %s: %s", dir, installHint)
		}
		return "", "", fmt.Errorf("read install stamp: %w", err)
	}
	if strings.TrimSpace(string(got)) != want {
		return "", "", fmt.Errorf("%s/node_modules is older than package.json or package-lock.json: %s", dir, installHint)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %w: %s", node, err, installHint)
	}
	if version := strings.TrimSpace(string(out)); !strings.HasPrefix(version, "v22.") {
		return "", "", fmt.Errorf("%s is %q, want v22.x: %s", node, version, installHint)
	}
	return dir, node, nil
}

// installDigest is what install.sh writes to the stamp file: the hex SHA-256 of package.json
// followed by package-lock.json.
func installDigest(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", name, err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// PeerDir returns the tests/node directory after checking the install (as Node22 does),
// failing the test otherwise. Other helpers that run scripts from tests/node use it.
func PeerDir(t testing.TB) string {
	t.Helper()
	dir, _, err := installed()
	if err != nil {
		t.Fatalf("nodepeer: %v", err)
	}
	return dir
}

// CappedBuffer keeps the first limit bytes written to it and counts the rest, so a chatty or
// hostile peer cannot exhaust the test's memory. It is safe for concurrent writers.
type CappedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	limit   int
	dropped int
}

// NewCappedBuffer returns a CappedBuffer that keeps at most limit bytes.
func NewCappedBuffer(limit int) *CappedBuffer { return &CappedBuffer{limit: limit} }

// Write keeps what fits and always reports success, so the writer (a child process's output
// copier) is never stopped by the cap.
func (b *CappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.limit - b.buf.Len()
	if room < 0 {
		room = 0
	}
	if len(p) > room {
		b.buf.Write(p[:room])
		b.dropped += len(p) - room
	} else {
		b.buf.Write(p)
	}
	return len(p), nil
}

// String returns what was kept, with a note when output was dropped.
func (b *CappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("%s\n[... %d bytes dropped]", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}

// Overflowed reports whether any output was dropped.
func (b *CappedBuffer) Overflowed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped > 0
}

// Bytes returns a copy of what was kept.
func (b *CappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
