package main

import (
	_ "embed"
	"fmt"
	"os"

	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
)

// defaultConfig is used when no --config is given: the example echo server over stdio, run
// by this binary (`gatehouse example-server echo`).
//
//go:embed default.yaml
var defaultConfig []byte

// selfCommand is the program name that, in the embedded default config only, means the
// running binary.
const selfCommand = "gatehouse"

// loadConfig reads and validates the config file, or the embedded default when path is empty;
// executable is the running binary, which the default's servers run.
func loadConfig(path, executable string) (*config.File, error) {
	data := defaultConfig
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if st.Size() > config.MaxFileBytes {
			return nil, fmt.Errorf("config %s: %d bytes, more than the limit of %d", path, st.Size(), config.MaxFileBytes)
		}
		data = make([]byte, st.Size())
		if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	file, err := config.Parse(data)
	if err != nil {
		if path == "" {
			path = "(embedded default)"
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if path == "" {
		for _, s := range file.Servers {
			if cmd := s.GetCommand(); len(cmd) > 0 && cmd[0] == selfCommand {
				cmd[0] = executable
			}
		}
	}
	return file, nil
}
