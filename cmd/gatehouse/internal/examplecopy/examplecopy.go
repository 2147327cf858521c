// Package examplecopy keeps the gatehouse binary's copy of the repository's default Cedar
// schema and policies (examples/policies), embedded so that `gatehouse up` needs no source
// tree (go:embed reads only files inside the module). The example echo server needs no copy:
// `gatehouse example-server echo` imports examples/servers/echo/echoserver.
//
// examples/ stays the canonical copy: `go generate ./cmd/gatehouse` rewrites the copies from
// it, and a test fails when they have drifted.
package examplecopy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Copy is one sync: where each source directory's files go, relative to cmd/gatehouse.
type Copy struct {
	From, To string
	// Match picks the files to copy by name.
	Match func(name string) bool
}

// Copies are what the binary carries of examples/.
var Copies = []Copy{
	{From: "examples/policies", To: "embedded/policies", Match: func(n string) bool {
		return strings.HasSuffix(n, ".cedar") || strings.HasSuffix(n, ".cedarschema")
	}},
}

// Want returns, for each copy, the files it should hold (name → content), computed from
// repoRoot.
func Want(repoRoot string, c Copy) (map[string][]byte, error) {
	src := filepath.Join(repoRoot, c.From)
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.From, err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() || !c.Match(e.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = data
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no files to copy", c.From)
	}
	return out, nil
}

// Have returns the files a copy's directory holds now.
func Have(moduleDir string, c Copy) (map[string][]byte, error) {
	dir := filepath.Join(moduleDir, c.To)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() || !c.Match(e.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = data
	}
	return out, nil
}

// Drift lists how the copies differ from examples/ (empty when in sync).
func Drift(repoRoot, moduleDir string) ([]string, error) {
	var drift []string
	for _, c := range Copies {
		want, err := Want(repoRoot, c)
		if err != nil {
			return nil, err
		}
		have, err := Have(moduleDir, c)
		if err != nil {
			return nil, err
		}
		for name, w := range want {
			if h, ok := have[name]; !ok {
				drift = append(drift, c.To+"/"+name+": missing")
			} else if !bytes.Equal(h, w) {
				drift = append(drift, c.To+"/"+name+": differs from "+c.From+"/"+name)
			}
		}
		for name := range have {
			if _, ok := want[name]; !ok {
				drift = append(drift, c.To+"/"+name+": no longer in "+c.From)
			}
		}
	}
	sort.Strings(drift)
	return drift, nil
}

// Write brings every copy in sync with examples/.
func Write(repoRoot, moduleDir string) error {
	for _, c := range Copies {
		want, err := Want(repoRoot, c)
		if err != nil {
			return err
		}
		have, err := Have(moduleDir, c)
		if err != nil {
			return err
		}
		dir := filepath.Join(moduleDir, c.To)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name := range have {
			if _, ok := want[name]; !ok {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					return err
				}
			}
		}
		for name, data := range want {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
