package svcmain_test

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/internal/svcmain"
	"github.com/gatehouse-mcp/gatehouse/internal/svcmain/svcmaintest"
	"github.com/gatehouse-mcp/gatehouse/internal/testsync"
)

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "s3cret\n", 0o600)
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"none", nil, "", ""},
		{"variable", map[string]string{"X": "v1"}, "v1", ""},
		{"file", map[string]string{"X_FILE": good}, "s3cret", ""},
		{"file owner read-only", map[string]string{"X_FILE": write("ro", "r", 0o400)}, "r", ""},
		{"both", map[string]string{"X": "v", "X_FILE": good}, "", "both set"},
		{"group readable", map[string]string{"X_FILE": write("g", "s", 0o640)}, "", "must not be readable by group or others"},
		{"world readable", map[string]string{"X_FILE": write("w", "s", 0o604)}, "", "mode 0604"},
		{"missing", map[string]string{"X_FILE": filepath.Join(dir, "none")}, "", "no such file"},
		{"directory", map[string]string{"X_FILE": dir}, "", "not a regular file"},
		{"empty", map[string]string{"X_FILE": write("e", "\n", 0o600)}, "", "is empty"},
		{"two lines", map[string]string{"X_FILE": write("two", "a\nb\n", 0o600)}, "", "more than one line"},
		{"too large", map[string]string{"X_FILE": write("big", strings.Repeat("a", 64<<10+1), 0o600)}, "", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := svcmain.ReadSecret(func(k string) string { return tt.env[k] }, "X")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantN   int
		wantErr string
	}{
		{"default", nil, nil, "def", 1, ""},
		{"from env", nil, map[string]string{"P_SOME_NAME": "env", "P_COUNT": "3"}, "env", 3, ""},
		{"flag wins", []string{"-some-name", "flag"}, map[string]string{"P_SOME_NAME": "env"}, "flag", 1, ""},
		{"bad value", nil, map[string]string{"P_COUNT": "many"}, "", 0, "P_COUNT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			s := fs.String("some-name", "def", "")
			n := fs.Int("count", 1, "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := svcmain.ApplyEnv(fs, "P_", func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || *s != tt.want || *n != tt.wantN {
				t.Fatalf("got %q %d %v, want %q %d", *s, *n, err, tt.want, tt.wantN)
			}
		})
	}
}

func TestImport(t *testing.T) {
	type svcConfig struct {
		Listen string
		Batch  int
		Grace  time.Duration
	}
	var cfg svcConfig
	register := func(fs *flag.FlagSet) {
		fs.StringVar(&cfg.Listen, "listen", ":1", "")
		fs.IntVar(&cfg.Batch, "max-batch", 256, "")
		fs.DurationVar(&cfg.Grace, "grace", 2*time.Second, "")
	}
	dst := flag.NewFlagSet("up", flag.ContinueOnError)
	dst.Int("max-batch", 64, "the ingress's")
	names := svcmain.Import(dst, register, "audit", "listen")
	if strings.Join(names, ",") != "grace,audit-max-batch" { // VisitAll order: by source name
		t.Fatalf("imported %v, want [grace audit-max-batch]", names)
	}
	if dst.Lookup("listen") != nil {
		t.Error("a skipped flag was imported")
	}
	// The service's own default is the default; parsing sets the service's config.
	if cfg.Batch != 256 || cfg.Grace != 2*time.Second {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if err := dst.Parse([]string{"-audit-max-batch", "9", "-grace", "1s"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Batch != 9 || cfg.Grace != time.Second {
		t.Fatalf("parse did not reach the service config: %+v", cfg)
	}
}

// spec is a service with one flag of its own that serves nothing but health.
func spec(listen *string, built *bool, stopping, closed chan struct{}) svcmain.Spec {
	return svcmain.Spec{
		Name:  "demo",
		Flags: func(fs *flag.FlagSet) { fs.StringVar(listen, "listen", "127.0.0.1:7999", "address") },
		Build: func(ctx context.Context, env *svcmain.Env) (*svcmain.Serving, error) {
			*built = true
			return &svcmain.Serving{
				Stopping: func() { close(stopping) },
				Close: func(context.Context) error {
					select {
					case <-stopping:
					default:
						t := "Close before Stopping"
						panic(t)
					}
					close(closed)
					return nil
				},
			}, nil
		},
	}
}

func TestMainRefusals(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		wantOut string
	}{
		{"help exits 0", []string{"-h"}, nil, "", "GATEHOUSE_DEMO_<FLAG>"},
		{"no token", []string{"-listen", "127.0.0.1:0"}, nil, "no internal token", ""},
		{"token as flag", []string{"-internal-token", "x"}, nil, "not defined", ""},
		{"stray argument", []string{"extra"}, map[string]string{svcmain.InternalTokenEnv: tok}, "unexpected arguments", ""},
		{"bad env", nil, map[string]string{"GATEHOUSE_DEMO_DRAIN": "soon", svcmain.InternalTokenEnv: tok}, "GATEHOUSE_DEMO_DRAIN", ""},
		{"drain zero", []string{"-drain", "0s"}, map[string]string{svcmain.InternalTokenEnv: tok}, "must be above 0", ""},
		{"drain too long", nil, map[string]string{"GATEHOUSE_DEMO_DRAIN": "1h", svcmain.InternalTokenEnv: tok}, "at most 10m", ""},
		{"bad log level", []string{"-log-level", "loud"}, map[string]string{svcmain.InternalTokenEnv: tok}, "log level", ""},
		{"token too short", nil, map[string]string{svcmain.InternalTokenEnv: tok[:15]}, "fewer than 16", ""},
		{"token file readable by others", nil, map[string]string{svcmain.InternalTokenEnv + "_FILE": worldReadable(t)}, "must not be readable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			var listen string
			var built bool
			// Already cancelled: should a refusal regress, Main builds, serves and returns at
			// once, and the test fails on built instead of hanging.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := svcmain.Main(ctx, spec(&listen, &built, make(chan struct{}), make(chan struct{})), tt.args, func(k string) string { return tt.env[k] }, &out)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output %q lacks %q", out.String(), tt.wantOut)
			}
			if built {
				t.Error("the service was built")
			}
		})
	}
}

// tok is an internal token long enough to be accepted.
const tok = "0123456789abcdef"

func worldReadable(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte("t"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMainServes: the environment fills the listen flag, the logger names the service, the
// development flag is logged at WARN, and a stop runs Stopping before Close.
func TestMainServes(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantWarn bool
	}{
		{"token from env", nil, map[string]string{svcmain.InternalTokenEnv: tok, "GATEHOUSE_DEMO_LISTEN": "127.0.0.1:0"}, false},
		{"insecure dev", []string{"-insecure-no-internal-token-dev", "-listen", "127.0.0.1:0"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out := &testsync.Buffer{}
			var listen string
			var built bool
			stopping, closed := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			go func() {
				done <- svcmain.Main(ctx, spec(&listen, &built, stopping, closed), append(tt.args, "-drain", "2s"), func(k string) string { return tt.env[k] }, out)
			}()
			addr := svcmaintest.WaitServing(t, out, done, 10*time.Second)
			if !strings.HasPrefix(addr, "127.0.0.1:") || addr == "127.0.0.1:7999" {
				t.Errorf("serving on %s: want the env's port", addr)
			}
			if !strings.Contains(out.String(), `"msg":"serving","svc":"demo"`) {
				t.Errorf("no serving line keyed svc=demo:\n%s", out.String())
			}
			if got := strings.Contains(out.String(), `"level":"WARN"`); got != tt.wantWarn {
				t.Errorf("WARN logged %v, want %v:\n%s", got, tt.wantWarn, out.String())
			}
			// /metrics is served on the port, outside the internal token (to loopback).
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "go_goroutines") {
				t.Errorf("GET /metrics: %d %.200s", resp.StatusCode, body)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			select {
			case <-closed:
			default:
				t.Fatal("Close did not run")
			}
		})
	}
}

// TestImportPrefixed: the named flags are registered under the prefix even without a clash,
// and write into the service's config; the others are not touched.
func TestImportPrefixed(t *testing.T) {
	var store, other string
	register := func(fs *flag.FlagSet) {
		fs.StringVar(&store, "store", "file", "where")
		fs.StringVar(&other, "other", "x", "")
	}
	dst := flag.NewFlagSet("up", flag.ContinueOnError)
	names := svcmain.Import(dst, register, "audit", "store")
	names = append(names, svcmain.ImportPrefixed(dst, register, "audit", "store")...)
	if strings.Join(names, ",") != "other,audit-store" || dst.Lookup("store") != nil {
		t.Fatalf("imported %v", names)
	}
	if err := dst.Parse([]string{"-audit-store", "postgres"}); err != nil {
		t.Fatal(err)
	}
	if store != "postgres" || other != "x" {
		t.Fatalf("store %q, other %q", store, other)
	}
}
