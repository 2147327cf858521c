package svcmain

import (
	"fmt"

	"github.com/gatehouse-mcp/gatehouse/internal/secret"
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

// ReadSecret returns the secret in the environment variable name, or in the file that
// name+"_FILE" names, or "" when neither is set. Secrets never come from flags: a command line
// is readable by every local user in /proc/PID/cmdline. A file must be a regular file of at
// most 64 KiB that neither group nor others can read (secret.ReadFile); one trailing newline
// is dropped.
func ReadSecret(getenv func(string) string, name string) (string, error) {
	value, path := getenv(name), getenv(name+"_FILE")
	switch {
	case value != "" && path != "":
		return "", fmt.Errorf("%s and %s_FILE are both set: set one", name, name)
	case path == "":
		return value, nil
	}
	s, err := secret.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", name, err)
	}
	return s, nil
}
