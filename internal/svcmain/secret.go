package svcmain

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// InternalTokenEnv names the internal token's variable; InternalTokenEnv+"_FILE" names a file
// holding it instead.
const InternalTokenEnv = "GATEHOUSE_INTERNAL_TOKEN"

// MinTokenBytes is the shortest internal token accepted: a short shared secret is a guessable
// one.
const MinTokenBytes = 16

// InternalToken reads the internal token (ReadSecret of InternalTokenEnv): "" when unset, an
// error when it is shorter than MinTokenBytes.
func InternalToken(getenv func(string) string) (string, error) {
	token, err := ReadSecret(getenv, InternalTokenEnv)
	if err != nil {
		return "", err
	}
	if token != "" && len(token) < MinTokenBytes {
		return "", fmt.Errorf("%s: the internal token has %d bytes, fewer than %d", InternalTokenEnv, len(token), MinTokenBytes)
	}
	return token, nil
}

// maxSecretBytes bounds a secret file.
const maxSecretBytes = 64 << 10

// ReadSecret returns the secret in the environment variable name, or in the file that
// name+"_FILE" names, or "" when neither is set. Secrets never come from flags: a command line
// is readable by every local user in /proc/PID/cmdline. A file must be a regular file of at
// most 64 KiB that neither group nor others can read; one trailing newline is dropped.
func ReadSecret(getenv func(string) string, name string) (string, error) {
	value, path := getenv(name), getenv(name+"_FILE")
	switch {
	case value != "" && path != "":
		return "", fmt.Errorf("%s and %s_FILE are both set: set one", name, name)
	case path == "":
		return value, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s_FILE: %s is not a regular file", name, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s_FILE: %s has mode %04o: a secret file must not be readable by group or others (chmod 600 it)", name, path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("%s_FILE: read %s: %w", name, path, err)
	}
	if len(data) > maxSecretBytes {
		return "", fmt.Errorf("%s_FILE: %s is larger than %d bytes", name, path, maxSecretBytes)
	}
	secret := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if secret == "" {
		return "", fmt.Errorf("%s_FILE: %s is empty", name, path)
	}
	if strings.ContainsAny(secret, "\r\n") {
		return "", errors.New(name + "_FILE: the secret spans more than one line")
	}
	return secret, nil
}
