// Package secret reads secrets the way every Gatehouse service does: from an environment
// variable or from a file that only its owner can read, never from a flag or a config file
// (a command line is readable by every local user, a config file is committed and copied).
package secret

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxBytes bounds a secret file.
const MaxBytes = 64 << 10

// ReadFile returns the secret in the file at path: a regular file of at most MaxBytes that
// neither group nor others can read, holding one line (one trailing newline is dropped).
func ReadFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %04o: a secret file must not be readable by group or others (chmod 600 it)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxBytes {
		return "", fmt.Errorf("%s is larger than %d bytes", path, MaxBytes)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", errors.New("the secret spans more than one line")
	}
	return s, nil
}
