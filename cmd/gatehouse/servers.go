package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1/registryv1connect"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/serverjson"
)

// `gatehouse servers`: the operator's hand on the registry, through registrysvc's RPCs at the
// gateway's URL, with the operator's own credential (as `gatehouse token`).

const serversUsage = `usage: gatehouse servers <command> [flags]

commands:
  list                every server: transport, tenants, whether pinned, quarantined tools
  show NAME           one server: its spec and each pinned tool's digest and quarantine
  approve NAME [--tool T]
                      pin the definitions observed of the server's quarantined tools (or
                      of tool T) and lift their quarantine
  import [--name N] [--tenants a,b] [--package I | --remote I] [--no-pin] FILE
                      add the server a server.json of the official MCP registry describes
                      (pinned unless --no-pin); run again to replace it

Every command takes --url (the gateway; default $` + gatewayURLEnv + ` or ` + defaultURL + `).
The operator's credential comes from ` + adminTokenEnv + ` or ` + adminTokenEnv + `_FILE and
Cedar decides (admin/servers.list, .approve, .import on the gateway).`

// serversTimeout bounds each RPC of the command.
const serversTimeout = 30 * time.Second

func serversCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, serversUsage)
		return errors.New("servers: no command (list, show, approve or import)")
	}
	var err error
	switch args[0] {
	case "list":
		err = serversList(ctx, args[1:], getenv, stdout)
	case "show":
		err = serversShow(ctx, args[1:], getenv, stdout)
	case "approve":
		err = serversApprove(ctx, args[1:], getenv, stdout)
	case "import":
		err = serversImport(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, serversUsage)
		return nil
	default:
		fmt.Fprintln(stderr, serversUsage)
		return fmt.Errorf("servers: unknown command %q", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, serversUsage)
		return nil
	}
	return err
}

// serversFlags is a subcommand's flag set with --url; flags may follow the arguments.
func serversFlags(name string, getenv func(string) string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("gatehouse servers "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", getenv(gatewayURLEnv), "the gateway's URL (env "+gatewayURLEnv+")")
	return fs, url
}

func serversArgs(fs *flag.FlagSet, name string, args []string, want int) ([]string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("servers %s: %w", name, err)
	}
	if len(pos) != want {
		return nil, fmt.Errorf("servers %s: want %d argument(s), got %d (see gatehouse servers -h)", name, want, len(pos))
	}
	return pos, nil
}

func registryClient(name, url string, getenv func(string) string) (registryv1connect.RegistryServiceClient, error) {
	base, hc, err := adminClient("servers "+name, url, getenv, serversTimeout)
	if err != nil {
		return nil, err
	}
	return registryv1connect.NewRegistryServiceClient(hc, base), nil
}

// serversError makes an RPC's failure one clear line.
func serversError(name, url string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("servers %s: %w", name, err)
	}
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		return fmt.Errorf("servers %s: the gateway refused the admin credential (%s): %s", name, adminTokenEnv, ce.Message())
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return fmt.Errorf("servers %s: cannot reach the registry at %s: %s", name, cmpStr(url, defaultURL), ce.Message())
	}
	return fmt.Errorf("servers %s: %s", name, ce.Message())
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func serversList(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs, url := serversFlags("list", getenv)
	if _, err := serversArgs(fs, "list", args, 0); err != nil {
		return err
	}
	c, err := registryClient("list", *url, getenv)
	if err != nil {
		return err
	}
	resp, err := c.ListServers(ctx, connect.NewRequest(&registryv1.ListServersRequest{}))
	if err != nil {
		return serversError("list", *url, err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTRANSPORT\tTENANTS\tPIN\tQUARANTINED\tSOURCE\tOWNER")
	for _, s := range resp.Msg.GetServers() {
		quarantined := "-"
		if s.GetPin() {
			g, err := c.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: s.GetName()}))
			if err != nil {
				return serversError("list", *url, err)
			}
			quarantined = fmt.Sprint(countQuarantined(g.Msg.GetPins()))
		}
		source := "config"
		if s.GetImported() {
			source = "imported"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\n", s.GetName(), transportName(s), strings.Join(s.GetTenants(), ","), s.GetPin(), quarantined, source, s.GetOwner())
	}
	return tw.Flush()
}

func countQuarantined(p *registryv1.ServerPins) int {
	n := 0
	for _, t := range p.GetTools() {
		if t.GetQuarantined() {
			n++
		}
	}
	return n
}

func transportName(s *registryv1.Server) string {
	switch s.GetTransport() {
	case registryv1.Transport_TRANSPORT_STDIO:
		return "stdio"
	case registryv1.Transport_TRANSPORT_STREAMABLE_HTTP:
		return "http"
	}
	return "?"
}

func serversShow(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs, url := serversFlags("show", getenv)
	pos, err := serversArgs(fs, "show", args, 1)
	if err != nil {
		return err
	}
	c, err := registryClient("show", *url, getenv)
	if err != nil {
		return err
	}
	resp, err := c.GetServer(ctx, connect.NewRequest(&registryv1.GetServerRequest{Name: pos[0]}))
	if err != nil {
		return serversError("show", *url, err)
	}
	s := resp.Msg.GetServer()
	fmt.Fprintf(stdout, "name:       %s\n", s.GetName())
	fmt.Fprintf(stdout, "transport:  %s\n", transportName(s))
	if s.GetUrl() != "" {
		fmt.Fprintf(stdout, "url:        %s\n", s.GetUrl())
	}
	if len(s.GetCommand()) > 0 {
		fmt.Fprintf(stdout, "command:    %q\n", s.GetCommand())
	}
	fmt.Fprintf(stdout, "tenants:    %s\n", strings.Join(s.GetTenants(), ", "))
	for _, kv := range [][2]string{{"owner", s.GetOwner()}, {"version", s.GetVersion()}, {"description", s.GetDescription()}, {"revisions", strings.Join(s.GetRevisions(), ", ")}} {
		if kv[1] != "" {
			fmt.Fprintf(stdout, "%-11s %s\n", kv[0]+":", kv[1])
		}
	}
	fmt.Fprintf(stdout, "imported:   %v\n", s.GetImported())
	fmt.Fprintf(stdout, "pin:        %v\n", s.GetPin())
	if !s.GetPin() {
		return nil
	}
	pins := resp.Msg.GetPins()
	if len(pins.GetTools()) == 0 {
		fmt.Fprintln(stdout, "tools:      none seen yet (the first tools/list pins them)")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOOL\tSTATE\tPINNED\tOBSERVED\tAPPROVED BY")
	for _, t := range pins.GetTools() {
		state, observed := "pinned", "-"
		if t.GetQuarantined() {
			state, observed = "QUARANTINED", t.GetObservedDigest()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.GetName(), state, cmpStr(t.GetDigest(), "-"), observed, cmpStr(t.GetApprovedBy(), "-"))
	}
	return tw.Flush()
}

func serversApprove(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs, url := serversFlags("approve", getenv)
	tool := fs.String("tool", "", "approve this tool only (default: every quarantined tool of the server)")
	pos, err := serversArgs(fs, "approve", args, 1)
	if err != nil {
		return err
	}
	c, err := registryClient("approve", *url, getenv)
	if err != nil {
		return err
	}
	resp, err := c.ApproveTools(ctx, connect.NewRequest(&registryv1.ApproveToolsRequest{Server: pos[0], Tool: *tool}))
	if err != nil {
		return serversError("approve", *url, err)
	}
	if len(resp.Msg.GetApproved()) == 0 {
		fmt.Fprintf(stdout, "%s: nothing quarantined to approve\n", pos[0])
		return nil
	}
	for _, name := range resp.Msg.GetApproved() {
		fmt.Fprintf(stdout, "approved %s/%s\n", pos[0], name)
	}
	return nil
}

func serversImport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, url := serversFlags("import", getenv)
	opts := serverjson.Options{}
	var tenants string
	fs.StringVar(&opts.Name, "name", "", "the server's name in Gatehouse (default: derived from server.json's name)")
	fs.StringVar(&tenants, "tenants", "", "comma-separated tenants the server is approved for")
	fs.IntVar(&opts.Package, "package", -1, "use server.json's package I (from 0)")
	fs.IntVar(&opts.Remote, "remote", -1, "use server.json's remote I (from 0)")
	fs.BoolVar(&opts.NoPin, "no-pin", false, "do not pin the server's tools")
	fs.BoolVar(&opts.AllowRuntimeArguments, "allow-runtime-args", false, "accept the package's runtimeArguments (options of npx, uvx or docker themselves; read them first)")
	pos, err := serversArgs(fs, "import", args, 1)
	if err != nil {
		return err
	}
	if tenants != "" {
		opts.Tenants = strings.Split(tenants, ",")
	}
	data, err := readLimited(pos[0], serverjson.MaxBytes)
	if err != nil {
		return fmt.Errorf("servers import: %w", err)
	}
	srv, notes, err := serverjson.Parse(data, opts)
	if err != nil {
		return fmt.Errorf("servers import: %s: %w", pos[0], err)
	}
	c, err := registryClient("import", *url, getenv)
	if err != nil {
		return err
	}
	if _, err := c.ImportServers(ctx, connect.NewRequest(&registryv1.ImportServersRequest{Servers: []*registryv1.Server{srv}})); err != nil {
		return serversError("import", *url, err)
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	fmt.Fprintf(stdout, "imported %s (%s, pin %v)\n", srv.GetName(), transportName(srv), srv.GetPin())
	if cmd := srv.GetCommand(); len(cmd) > 0 {
		fmt.Fprintf(stdout, "  command: %q\n", cmd)
		for _, k := range slices.Sorted(maps.Keys(srv.GetEnv())) {
			fmt.Fprintf(stdout, "  env: %s\n", k)
		}
	}
	if len(srv.GetTenants()) == 0 {
		fmt.Fprintf(stderr, "note: no tenant is approved for %s yet: import again with --tenants\n", srv.GetName())
	}
	return nil
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("%s is more than %d bytes", path, limit)
	}
	return data, nil
}
