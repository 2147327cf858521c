package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1/authv1connect"
)

// `gatehouse token`: the operator's hand on gateway API tokens, through authsvc's RPCs at
// the gateway's URL (in `gatehouse up` the internal RPCs share the MCP port).

const (
	// tokenTimeout bounds each RPC of the CLI.
	tokenTimeout = 30 * time.Second
	// maxListPages bounds `token list`: at 500 tokens a page, a million tokens.
	maxListPages = 2000
)

const tokenUsage = `usage: gatehouse token <command> [flags]

commands:
  issue --principal P --tenant T [--groups a,b] [--ttl 24h] [--kind user|service]
            issue an API token; prints its id and the token, which is shown only once
  list [--tenant T]
            list tokens (never their values)
  revoke ID
            revoke a token: every gateway replica refuses it within 2 seconds, and the
            sessions and open streams it created end

Every command takes --url (the gateway; default $` + gatewayURLEnv + ` or ` + defaultURL + `).
The operator's credential comes from the environment only: ` + adminTokenEnv + `, or
` + adminTokenEnv + `_FILE naming a file only its owner can read. It is sent as a bearer
token, and Cedar decides each request (admin/tokens.issue, .list, .revoke on the tenant);
the shipped policies let the group gatehouse-admins administer (gatehouse up's dev token is
in it). The internal token alone opens no admin RPC.`

func tokenCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, tokenUsage)
		return errors.New("token: no command (issue, list or revoke)")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "issue":
		return tokenIssue(ctx, args, getenv, stdout, stderr)
	case "list":
		return tokenList(ctx, args, getenv, stdout, stderr)
	case "revoke":
		return tokenRevoke(ctx, args, getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, tokenUsage)
		return nil
	}
	fmt.Fprintln(stderr, tokenUsage)
	return fmt.Errorf("token: unknown command %q (issue, list or revoke)", cmd)
}

// tokenFlags is a subcommand's flag set with the --url every one takes.
type tokenFlags struct {
	fs    *flag.FlagSet
	name  string
	url   string
	usage func()
}

func newTokenFlags(name, synopsis string, getenv func(string) string, stdout io.Writer) *tokenFlags {
	tf := &tokenFlags{fs: flag.NewFlagSet("gatehouse token "+name, flag.ContinueOnError), name: name}
	def := getenv(gatewayURLEnv)
	if def == "" {
		def = defaultURL
	}
	tf.fs.StringVar(&tf.url, "url", def, "the gateway's URL (env "+gatewayURLEnv+")")
	// Parse errors are reported once, as the command's error; usage only when asked for
	// (the flag package would print it after every error).
	tf.fs.SetOutput(io.Discard)
	tf.fs.Usage = func() {}
	tf.usage = func() {
		fmt.Fprintf(stdout, "usage: gatehouse token %s\n\nThe operator's credential comes from %s or %s_FILE.\n\n", synopsis, adminTokenEnv, adminTokenEnv)
		tf.fs.SetOutput(stdout)
		tf.fs.PrintDefaults()
		tf.fs.SetOutput(io.Discard)
	}
	return tf
}

// parse parses args, leaving want positional arguments; help is true after -h.
func (tf *tokenFlags) parse(args []string, want int) (help bool, err error) {
	if err := tf.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			tf.usage()
			return true, nil
		}
		return false, fmt.Errorf("token %s: %w (see 'gatehouse token %s -h')", tf.name, err, tf.name)
	}
	if tf.fs.NArg() != want {
		if want == 0 {
			return false, fmt.Errorf("token %s: unexpected arguments: %s", tf.name, strings.Join(tf.fs.Args(), " "))
		}
		return false, fmt.Errorf("token %s: want %d argument(s), got %d (see 'gatehouse token %s -h')", tf.name, want, tf.fs.NArg(), tf.name)
	}
	return false, nil
}

// client returns authsvc's client at the gateway, with the admin credential.
func (tf *tokenFlags) client(getenv func(string) string) (authv1connect.AuthServiceClient, error) {
	base, hc, err := adminClient("token "+tf.name, tf.url, getenv, tokenTimeout)
	if err != nil {
		return nil, err
	}
	return authv1connect.NewAuthServiceClient(hc, base), nil
}

// gatewayURL checks the gateway's URL: http or https, a host, no credentials, query or
// fragment (the admin credential travels in a header, never in the URL).
func gatewayURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%q: want an http:// or https:// URL", raw)
	case u.Host == "":
		return "", fmt.Errorf("%q: no host", raw)
	case u.User != nil:
		return "", fmt.Errorf("%q: credentials do not belong in the URL (set %s)", u.Redacted(), adminTokenEnv)
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("%q: want no query or fragment", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// rpcError makes an RPC's failure one clear line.
func (tf *tokenFlags) rpcError(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("token %s: %w", tf.name, err)
	}
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		return fmt.Errorf("token %s: the gateway at %s refused the admin credential (%s): %s", tf.name, tf.url, adminTokenEnv, ce.Message())
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return fmt.Errorf("token %s: cannot reach authsvc at %s: %s", tf.name, tf.url, ce.Message())
	case connect.CodeUnimplemented:
		return fmt.Errorf("token %s: %s serves no token API (is it a Gatehouse gateway?): %s", tf.name, tf.url, ce.Message())
	}
	return fmt.Errorf("token %s: %s", tf.name, ce.Message())
}

func tokenIssue(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	tf := newTokenFlags("issue", "issue --principal P --tenant T [--groups a,b] [--ttl 24h] [--kind user|service] [--url URL]", getenv, stdout)
	var principal, tenant, groups, kind string
	var ttl time.Duration
	tf.fs.StringVar(&principal, "principal", "", "the principal's id (required)")
	tf.fs.StringVar(&tenant, "tenant", "", "the principal's tenant (required)")
	tf.fs.StringVar(&groups, "groups", "", "comma-separated groups of the principal")
	tf.fs.DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 24h or 720h (default: no expiry)")
	tf.fs.StringVar(&kind, "kind", "user", "user or service")
	if help, err := tf.parse(args, 0); help || err != nil {
		return err
	}
	req := &authv1.CreateTokenRequest{PrincipalId: principal, Tenant: tenant}
	switch {
	case principal == "":
		return errors.New("token issue: --principal is required")
	case tenant == "":
		return errors.New("token issue: --tenant is required")
	}
	switch kind {
	case "user":
		req.Kind = authv1.PrincipalKind_PRINCIPAL_KIND_USER
	case "service":
		req.Kind = authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE
	default:
		return fmt.Errorf("token issue: --kind %q: want user or service", kind)
	}
	if groups != "" {
		for g := range strings.SplitSeq(groups, ",") {
			if g = strings.TrimSpace(g); g == "" {
				return fmt.Errorf("token issue: --groups %q: an empty group", groups)
			}
			req.Groups = append(req.Groups, g)
		}
	}
	if isSet(tf.fs, "ttl") {
		if ttl < time.Second || ttl%time.Second != 0 {
			return fmt.Errorf("token issue: --ttl %s: want whole seconds, at least 1s (leave --ttl out for a token that does not expire)", ttl)
		}
		req.TtlSeconds = int64(ttl / time.Second)
	}
	client, err := tf.client(getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	resp, err := client.CreateToken(ctx, connect.NewRequest(req))
	if err != nil {
		return tf.rpcError(err)
	}
	fmt.Fprintf(stdout, "token_id: %s\ntoken:    %s\n", resp.Msg.GetTokenId(), resp.Msg.GetToken())
	fmt.Fprintln(stderr, "The token is shown only this once: store it now. Revoke it with 'gatehouse token revoke "+resp.Msg.GetTokenId()+"'.")
	return nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func tokenList(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	tf := newTokenFlags("list", "list [--tenant T] [--url URL]", getenv, stdout)
	var tenant string
	tf.fs.StringVar(&tenant, "tenant", "", "only this tenant's tokens")
	if help, err := tf.parse(args, 0); help || err != nil {
		return err
	}
	client, err := tf.client(getenv)
	if err != nil {
		return err
	}
	var tokens []*authv1.TokenInfo
	req := &authv1.ListTokensRequest{Tenant: tenant, PageSize: 500}
	for page := 0; ; page++ {
		if page == maxListPages {
			return fmt.Errorf("token list: more than %d pages; narrow it with --tenant", maxListPages)
		}
		pctx, cancel := context.WithTimeout(ctx, tokenTimeout)
		resp, err := client.ListTokens(pctx, connect.NewRequest(req))
		cancel()
		if err != nil {
			return tf.rpcError(err)
		}
		tokens = append(tokens, resp.Msg.GetTokens()...)
		if resp.Msg.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.Msg.GetNextPageToken()
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOKEN ID\tPRINCIPAL\tTENANT\tKIND\tGROUPS\tCREATED\tEXPIRES")
	for _, t := range tokens {
		groups, expires := strings.Join(t.GetGroups(), ","), "never"
		if groups == "" {
			groups = "-"
		}
		if t.GetExpireTime() != nil {
			expires = t.GetExpireTime().AsTime().UTC().Format(time.RFC3339)
		}
		kind := strings.ToLower(strings.TrimPrefix(t.GetKind().String(), "PRINCIPAL_KIND_"))
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.GetTokenId(), t.GetPrincipalId(), t.GetTenant(), kind, groups,
			t.GetCreateTime().AsTime().UTC().Format(time.RFC3339), expires)
	}
	return w.Flush()
}

func tokenRevoke(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	tf := newTokenFlags("revoke", "revoke [--url URL] ID", getenv, stdout)
	if help, err := tf.parse(args, 1); help || err != nil {
		return err
	}
	id := tf.fs.Arg(0)
	client, err := tf.client(getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	if _, err := client.RevokeToken(ctx, connect.NewRequest(&authv1.RevokeTokenRequest{TokenId: id})); err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			return fmt.Errorf("token revoke: no token with id %q (already revoked, expired, or never issued)", id)
		}
		return tf.rpcError(err)
	}
	fmt.Fprintf(stdout, "revoked %s\n", id)
	return nil
}
