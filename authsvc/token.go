package authsvc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-mcp/gatehouse/authsvc/internal/oidc"
	authv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/ident"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits and formats of tokens and the requests that carry them.
const (
	// MaxTokenBytes bounds a credential; longer ones are refused before they are hashed.
	MaxTokenBytes = 4096
	// MinExplicitTokenBytes is the shortest token CreateToken accepts from the caller (a
	// configured dev token); generated tokens carry 256 random bits.
	MinExplicitTokenBytes = 16
	// TokenPrefix starts every generated token, so a leaked one is recognisable (secret
	// scanners) as a Gatehouse token.
	TokenPrefix = "gh_"
	// MaxTTL is the longest lifetime a token may be given.
	MaxTTL = 10 * 365 * 24 * time.Hour

	maxRequestBytes = 32 << 10
	maxServerBytes  = 256
	maxGroups       = 64
	// Bounds of ListTokens: the page size (by default and at most), how many tokens one
	// request examines (a tenant's page may come back short, with a next page token), and
	// how many records one etcd transaction reads (etcd's default --max-txn-ops is 128).
	defaultPageSize = 100
	maxPageSize     = 500
	maxListScan     = 5000
	listBatch       = 100
	// leaseGrace is how long etcd keeps an expiring token past its expiry before deleting
	// it: until then Authenticate says "token expired" rather than "unknown token".
	leaseGrace = time.Hour
)

// record is what etcd holds for one token, under tokens/<hex sha256(token)>. It never
// contains the token.
type record struct {
	TokenID     string     `json:"token_id"`
	PrincipalID string     `json:"principal_id"`
	Tenant      string     `json:"tenant"`
	Kind        string     `json:"kind"`
	Groups      []string   `json:"groups,omitempty"`
	CreateTime  time.Time  `json:"create_time"`
	ExpireTime  *time.Time `json:"expire_time,omitempty"`
}

func (r *record) principal() *authv1.Principal {
	p := &authv1.Principal{
		Id:         r.PrincipalID,
		Kind:       authv1.PrincipalKind(authv1.PrincipalKind_value[r.Kind]),
		Tenant:     r.Tenant,
		Groups:     r.Groups,
		Attributes: map[string]string{"token_id": r.TokenID},
	}
	if r.ExpireTime != nil {
		p.ExpireTime = timestamppb.New(*r.ExpireTime)
	}
	return p
}

// tokenStore keeps tokens in etcd: prefix+"tokens/"+hex(sha256(token)) holds the record and
// prefix+"ids/"+token_id the digest, so a token can be revoked by its id. Tokens carry at
// least 128 bits of entropy (256 when generated), so a fast unsalted hash is the right one:
// nothing can be brute-forced, and lookup by digest compares no secret byte by byte.
type tokenStore struct {
	kv     Etcd
	prefix string
	now    func() time.Time
}

func (ts *tokenStore) tokenKey(digest string) string { return ts.prefix + "tokens/" + digest }
func (ts *tokenStore) idKey(id string) string        { return ts.prefix + "ids/" + id }

func digestOf(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// lookup returns the record of a token, or an Unauthenticated error for an unknown one.
func (ts *tokenStore) lookup(ctx context.Context, token string) (*record, error) {
	resp, err := ts.kv.Get(ctx, ts.tokenKey(digestOf(token)))
	if err != nil {
		return nil, storeError(ctx, "read token", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, unauthenticated("unknown or revoked token")
	}
	var rec record
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("decode token record %s: %w", resp.Kvs[0].Key, err)
	}
	return &rec, nil
}

// create validates a request and stores its token, refusing to replace an existing one.
func (ts *tokenStore) create(ctx context.Context, req *authv1.CreateTokenRequest) (id, token string, err error) {
	kind, err := validateCreate(req)
	if err != nil {
		return "", "", err
	}
	token = req.GetToken()
	if token == "" {
		token = TokenPrefix + randomString(32, base64.RawURLEncoding.EncodeToString)
	}
	id = randomString(16, hex.EncodeToString)
	now := ts.now().UTC()
	rec := record{
		TokenID:     id,
		PrincipalID: req.GetPrincipalId(),
		Tenant:      req.GetTenant(),
		Kind:        kind.String(),
		Groups:      slices.Compact(slices.Sorted(slices.Values(req.GetGroups()))),
		CreateTime:  now,
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl > 0 {
		exp := now.Add(ttl)
		rec.ExpireTime = &exp
	}
	value, err := json.Marshal(rec)
	if err != nil {
		return "", "", fmt.Errorf("encode token record: %w", err)
	}
	digest := digestOf(token)
	var opts []clientv3.OpOption
	var lease clientv3.LeaseID
	if ttl > 0 {
		// etcd deletes the token's keys some time after it expires.
		l, err := ts.kv.Grant(ctx, int64((ttl+leaseGrace)/time.Second))
		if err != nil {
			return "", "", storeError(ctx, "grant token lease", err)
		}
		lease = l.ID
		opts = append(opts, clientv3.WithLease(lease))
	}
	txn, err := ts.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(ts.tokenKey(digest)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(ts.idKey(id)), "=", 0)).
		Then(clientv3.OpPut(ts.tokenKey(digest), string(value), opts...),
			clientv3.OpPut(ts.idKey(id), digest, opts...)).
		Commit()
	if err == nil && !txn.Succeeded {
		err = fmt.Errorf("%w: a token with this value is already registered", errAlreadyExists)
	} else if err != nil {
		err = storeError(ctx, "store token", err)
	}
	if err != nil {
		if lease != 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = ts.kv.Revoke(rctx, lease)
			cancel()
		}
		return "", "", err
	}
	return id, token, nil
}

// revoke deletes a token's two keys in one transaction.
func (ts *tokenStore) revoke(ctx context.Context, id string) error {
	if id == "" {
		return invalid("token_id is required")
	}
	if !ident.ValidID(id) {
		return invalid("token_id: want 1 to %d of [A-Za-z0-9._@-]", ident.MaxIDBytes)
	}
	resp, err := ts.kv.Get(ctx, ts.idKey(id))
	if err != nil {
		return storeError(ctx, "read token id", err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("%w: %s", errNotFound, id)
	}
	digest := string(resp.Kvs[0].Value)
	txn, err := ts.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(ts.idKey(id)), "=", digest)).
		Then(clientv3.OpDelete(ts.idKey(id)), clientv3.OpDelete(ts.tokenKey(digest))).
		Commit()
	if err != nil {
		return storeError(ctx, "delete token", err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("%w: %s (revoked concurrently)", errNotFound, id)
	}
	return nil
}

// list returns a page of the tokens, of one tenant when req names it, ordered by token id.
// The page token is the last id examined. Each request examines at most maxListScan ids,
// reading ids and records at one revision.
func (ts *tokenStore) list(ctx context.Context, req *authv1.ListTokensRequest) ([]*authv1.TokenInfo, string, error) {
	tenant := req.GetTenant()
	if tenant != "" && !ident.ValidID(tenant) {
		return nil, "", invalid("tenant: want 1 to %d of [A-Za-z0-9._@-]", ident.MaxIDBytes)
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		return nil, "", invalid("page_size: want 0 (the default, %d) to %d", defaultPageSize, maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	idPrefix := ts.idKey("")
	from := idPrefix
	if after := req.GetPageToken(); after != "" {
		if !ident.ValidID(after) {
			return nil, "", invalid("page_token: not a token of a ListTokens answer")
		}
		from = ts.idKey(after) + "\x00"
	}
	end := clientv3.GetPrefixRangeEnd(idPrefix)
	var out []*authv1.TokenInfo
	var rev int64
	scanned := 0
	last := ""
	for scanned < maxListScan {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(min(listBatch, maxListScan-scanned)))}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		ids, err := ts.kv.Get(ctx, from, opts...)
		if err != nil {
			return nil, "", storeError(ctx, "list token ids", err)
		}
		if rev == 0 {
			rev = ids.Header.Revision
		}
		if len(ids.Kvs) == 0 {
			return out, "", nil
		}
		reads := make([]clientv3.Op, len(ids.Kvs))
		for i, kv := range ids.Kvs {
			reads[i] = clientv3.OpGet(ts.tokenKey(string(kv.Value)), clientv3.WithRev(rev))
		}
		recs, err := ts.kv.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return nil, "", storeError(ctx, "read token records", err)
		}
		for i, kv := range ids.Kvs {
			scanned++
			last = strings.TrimPrefix(string(kv.Key), idPrefix)
			got := recs.Responses[i].GetResponseRange().GetKvs()
			if len(got) == 0 {
				continue // the two keys are written and deleted together: not expected
			}
			var rec record
			if err := json.Unmarshal(got[0].Value, &rec); err != nil {
				return nil, "", fmt.Errorf("decode token record %s: %w", got[0].Key, err)
			}
			if tenant != "" && rec.Tenant != tenant {
				continue
			}
			out = append(out, rec.info())
			if len(out) == size {
				if i == len(ids.Kvs)-1 && !ids.More {
					return out, "", nil
				}
				return out, last, nil
			}
		}
		if !ids.More {
			return out, "", nil
		}
		from = ts.idKey(last) + "\x00"
	}
	return out, last, nil
}

// info is what ListTokens tells of a token: never its value or digest.
func (r *record) info() *authv1.TokenInfo {
	info := &authv1.TokenInfo{
		TokenId:     r.TokenID,
		PrincipalId: r.PrincipalID,
		Tenant:      r.Tenant,
		Kind:        authv1.PrincipalKind(authv1.PrincipalKind_value[r.Kind]),
		Groups:      r.Groups,
		CreateTime:  timestamppb.New(r.CreateTime),
	}
	if r.ExpireTime != nil {
		info.ExpireTime = timestamppb.New(*r.ExpireTime)
	}
	return info
}

// validateCreate checks a CreateTokenRequest and returns the principal kind to record.
func validateCreate(req *authv1.CreateTokenRequest) (authv1.PrincipalKind, error) {
	if req.GetPrincipalId() == "" {
		return 0, invalid("principal_id is required")
	}
	if !ident.ValidID(req.GetPrincipalId()) {
		return 0, invalid("principal_id: want 1 to %d of [A-Za-z0-9._@-]", ident.MaxIDBytes)
	}
	if req.GetTenant() == "" {
		return 0, invalid("tenant is required")
	}
	if !ident.ValidID(req.GetTenant()) {
		return 0, invalid("tenant: want 1 to %d of [A-Za-z0-9._@-]", ident.MaxIDBytes)
	}
	if len(req.GetGroups()) > maxGroups {
		return 0, invalid("%d groups, more than the limit of %d", len(req.GetGroups()), maxGroups)
	}
	for i, g := range req.GetGroups() {
		if !ident.ValidID(g) {
			return 0, invalid("groups[%d]: want 1 to %d of [A-Za-z0-9._@-]", i, ident.MaxIDBytes)
		}
	}
	kind := req.GetKind()
	switch kind {
	case authv1.PrincipalKind_PRINCIPAL_KIND_UNSPECIFIED:
		kind = authv1.PrincipalKind_PRINCIPAL_KIND_USER
	case authv1.PrincipalKind_PRINCIPAL_KIND_USER, authv1.PrincipalKind_PRINCIPAL_KIND_SERVICE:
	case authv1.PrincipalKind_PRINCIPAL_KIND_ANONYMOUS:
		return 0, invalid("kind: anonymous principals come from anonymous grants, not tokens")
	default:
		return 0, invalid("kind: unknown principal kind %d", kind)
	}
	if ttl := req.GetTtlSeconds(); ttl < 0 || ttl > int64(MaxTTL/time.Second) {
		return 0, invalid("ttl_seconds: want 0 (no expiry) to %d", int64(MaxTTL/time.Second))
	}
	if t := req.GetToken(); t != "" {
		if len(t) < MinExplicitTokenBytes || len(t) > MaxTokenBytes {
			return 0, invalid("token: want %d to %d characters", MinExplicitTokenBytes, MaxTokenBytes)
		}
		for i := 0; i < len(t); i++ {
			if t[i] < 0x21 || t[i] > 0x7e {
				return 0, invalid("token: only visible ASCII characters (it travels in an Authorization header)")
			}
		}
		if oidc.LooksLikeJWT(t) {
			return 0, invalid("token: has the shape of a JWT, which is verified as an OpenID Connect token, never looked up")
		}
	}
	return kind, nil
}

// randomString returns n random bytes, encoded.
func randomString(n int, encode func([]byte) string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return encode(b)
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
