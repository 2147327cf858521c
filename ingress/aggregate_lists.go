package ingress

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonnav"
	"github.com/gatehouse-mcp/gatehouse/internal/jsonrpc"
)

// Lists of the aggregated endpoint: each page fans out to the servers still to be listed,
// in parallel, each bounded by --list-timeout (a server that fails or is slow is left out of
// the listing and logged, never failing the whole list); the servers' answers, each already
// filtered as on the server's own endpoint (lists.go), are merged in configuration order,
// tool and prompt names prefixed. A page holds at most --list-page-size items (0: everything
// the servers' pages held); the composite cursor says, per server still to be listed, its
// own cursor and how many of that page's items were already given. It is opaque to the host
// and signed with the session's key: a cursor from another session, or altered, is refused.

// aggregateKinds are the list methods of the aggregated endpoint: the member of the result
// holding the items, the member naming an item, and whether the name carries the prefix.
var aggregateKinds = map[string]struct {
	field, key string
	prefixed   bool
}{
	"tools/list":               {"tools", "name", true},
	"prompts/list":             {"prompts", "name", true},
	"resources/list":           {"resources", "uri", false},
	"resources/templates/list": {"resourceTemplates", "uriTemplate", false},
}

// Bounds of the composite cursor.
const (
	maxServerCursor = 2 << 10  // one upstream's cursor; a longer one ends that server's listing
	maxCursor       = 32 << 10 // the whole cursor the host sends back
)

// listPos is where the listing of one server stands.
type listPos struct {
	Server string `json:"n"`
	Cursor string `json:"c,omitempty"` // the server's own cursor of the page to read
	Skip   int    `json:"o,omitempty"` // items of that page already given
}

type listCursor struct {
	Method string    `json:"m"`
	Left   []listPos `json:"s"`
}

// serverPage is one server's part of a page.
type serverPage struct {
	items []json.RawMessage
	next  string
	ok    bool
}

func (s *Service) aggregateList(ctx context.Context, x *exchange, m *jsonrpc.Message, servers []*registryv1.Server, r replier) {
	kind := aggregateKinds[m.Method]
	byName := make(map[string]*registryv1.Server, len(servers))
	for _, srv := range servers {
		byName[srv.GetName()] = srv
	}
	var left []listPos
	if cur, ok := cursorParam(m.Params); ok {
		lc, err := s.openCursor(x.session.ID, x.session.CursorKey, cur)
		if err != nil || lc.Method != m.Method {
			_ = r.answer(refusalResponse(m.ID, errBadCursor, x.traceID, nil), errBadCursor)
			return
		}
		for _, p := range lc.Left {
			if byName[p.Server] != nil { // a server gone from the catalogue meanwhile is done
				left = append(left, p)
			}
		}
	} else {
		for _, srv := range servers {
			left = append(left, listPos{Server: srv.GetName()})
		}
	}
	pages := make([]serverPage, len(left))
	var wg sync.WaitGroup
	for i, p := range left {
		wg.Go(func() { pages[i] = s.listServer(ctx, x, m, byName[p.Server], p.Cursor, kind.field) })
	}
	wg.Wait()

	budget := s.cfg.ListPageSize
	items := make([][]byte, 0, 64)
	var next []listPos
	seen := map[string]string{} // resource URIs given on this page: which server has each
	full := false
	for i, p := range left {
		srv := byName[p.Server]
		page := pages[i]
		if full {
			next = append(next, p) // not reached: listed from the same place next time
			continue
		}
		if !page.ok {
			continue // left out of this listing (logged by listServer)
		}
		if p.Skip > len(page.items) {
			p.Skip = len(page.items)
		}
		avail := page.items[p.Skip:]
		take := len(avail)
		if budget > 0 && len(items)+take > budget {
			take = budget - len(items)
			full = true
		}
		for _, it := range avail[:take] {
			out, keep := s.aggregateItem(x, it, srv, servers, kind.key, kind.prefixed, seen)
			if keep {
				items = append(items, out)
			}
		}
		switch {
		case take < len(avail):
			next = append(next, listPos{Server: p.Server, Cursor: p.Cursor, Skip: p.Skip + take})
		case page.next != "":
			next = append(next, listPos{Server: p.Server, Cursor: page.next})
		}
		if budget > 0 && len(items) >= budget {
			full = true
		}
	}
	// The items are what the servers sent (renamed in place): joined, not encoded again.
	body := append(append(append([]byte(`{"`), kind.field...), `":`...), jsonnav.JoinArray(items)...)
	if len(next) > 0 {
		cur, err := s.sealCursor(x.session.ID, x.session.CursorKey, listCursor{Method: m.Method, Left: next})
		for err != nil && len(next) > 0 {
			// Too long to seal: the servers with the longest cursors end their listing here
			// (logged), rather than the whole list failing.
			longest := 0
			for i, p := range next {
				if len(p.Cursor) > len(next[longest].Cursor) {
					longest = i
				}
			}
			s.logger.Warn("aggregated list: the composite cursor is too long; a server's listing ends here", "server", next[longest].Server, "method", m.Method, "trace_id", x.traceID)
			next = slices.Delete(next, longest, longest+1)
			cur, err = "", nil
			if len(next) > 0 {
				cur, err = s.sealCursor(x.session.ID, x.session.CursorKey, listCursor{Method: m.Method, Left: next})
			}
		}
		if cur != "" {
			body = append(append(body, `,"nextCursor":`...), mustQuote(cur)...)
		}
	}
	_ = r.answer(resultResponse(m.ID, append(body, '}')), nil)
}

// listServer reads one page of one server's list, as a call on that server (decided, audited
// and filtered as on its own endpoint), within the list timeout.
func (s *Service) listServer(ctx context.Context, x *exchange, m *jsonrpc.Message, srv *registryv1.Server, cursor, field string) serverPage {
	params := []byte(`{}`)
	if cursor != "" {
		params, _ = json.Marshal(map[string]string{"cursor": cursor})
	}
	raw := fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%s,"method":%q,"params":%s}`, m.ID, m.Method, params)
	sub, err := jsonrpc.Peek(raw)
	if err != nil {
		s.logger.Error("aggregated list: cannot build a server's request", "server", srv.GetName(), "err", err)
		return serverPage{}
	}
	lctx, cancel := context.WithTimeout(ctx, s.cfg.ListTimeout)
	defer cancel()
	var got collected
	s.run(lctx, s.callOn(x, srv, &sub), &got)
	if got.refusal != nil || got.final == nil {
		reason := "no answer"
		if got.refusal != nil {
			reason = got.refusal.Name
		}
		if ctx.Err() == nil {
			s.logger.Warn("aggregated list: server left out", "server", srv.GetName(), "method", m.Method, "reason", reason, "trace_id", x.traceID)
		}
		return serverPage{}
	}
	rs, re, ok, err := jsonnav.Member(got.final, "result")
	if err != nil || !ok {
		s.logger.Warn("aggregated list: server left out", "server", srv.GetName(), "method", m.Method, "reason", "an error or unreadable answer", "trace_id", x.traceID)
		return serverPage{}
	}
	result := got.final[rs:re]
	page := serverPage{ok: true, next: jsonnav.MemberString(result, "nextCursor")}
	if ls, le, ok, err := jsonnav.Member(result, field); err == nil && ok {
		list := result[ls:le]
		err = jsonnav.Elements(list, func(a, b int) { page.items = append(page.items, list[a:b]) })
		if err != nil {
			s.logger.Warn("aggregated list: server left out", "server", srv.GetName(), "method", m.Method, "reason", "unreadable items", "trace_id", x.traceID)
			return serverPage{}
		}
	}
	if len(page.next) > maxServerCursor {
		s.logger.Warn("aggregated list: server's cursor too long; its listing ends here", "server", srv.GetName(), "bytes", len(page.next))
		page.next = ""
	}
	return page
}

// aggregateItem is an item as the aggregated endpoint lists it: a tool or prompt renamed with
// its server's prefix; a resource kept as it is, unless an earlier server (configuration
// order) listed the same URI on this page, when it is hidden and logged. An unprefixed
// server's item whose name another server's prefix claims is hidden and logged too.
func (s *Service) aggregateItem(x *exchange, item []byte, srv *registryv1.Server, servers []*registryv1.Server, key string, prefixed bool, seen map[string]string) ([]byte, bool) {
	ns, ne, ok, err := jsonnav.Member(item, key)
	if err != nil || !ok {
		return nil, false
	}
	name, ok := jsonnav.StringOf(item[ns:ne])
	if !ok || name == "" {
		return nil, false
	}
	if !prefixed {
		first, dup := seen[name]
		if !dup && key == "uri" {
			// An earlier page may have listed it from an earlier server.
			if owner, ok := s.resources.lookup(x.session.ID, name); ok && owner != srv.GetName() && rank(servers, owner) < rank(servers, srv.GetName()) {
				first, dup = owner, true
			}
		}
		if dup {
			s.logger.Warn("aggregated list: a URI two servers serve; the later one is hidden", "uri", name, "served_by", first, "hidden", srv.GetName())
			return nil, false
		}
		seen[name] = srv.GetName()
		if key == "uri" {
			s.resources.note(x.session.ID, name, srv.GetName(), servers)
		}
		return item, true
	}
	if aggregatedName(srv, name) == name {
		if claimed(servers, name) {
			s.logger.Warn("aggregated list: a name another server's prefix claims; hidden", "name", name, "server", srv.GetName())
			return nil, false
		}
		return item, true
	}
	return jsonnav.ReplaceRange(item, ns, ne, mustQuote(aggregatedName(srv, name))), true
}

func mustQuote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}

// cursorParam is params.cursor of a list request, when there is one.
func cursorParam(params json.RawMessage) (string, bool) {
	if len(params) == 0 {
		return "", false
	}
	var p struct {
		Cursor *string `json:"cursor"`
	}
	if json.Unmarshal(params, &p) != nil || p.Cursor == nil {
		return "", false
	}
	return *p.Cursor, true
}

var errCursor = errors.New("invalid cursor")

// sealCursor encodes lc and signs it for the session: base64url(JSON) "." hex(HMAC-SHA256 of
// the session id and the encoding, 128 bits).
func (s *Service) sealCursor(session, key string, lc listCursor) (string, error) {
	body, err := json.Marshal(lc)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	mac, err := cursorMAC(session, key, payload)
	if err != nil {
		return "", err
	}
	out := payload + "." + mac
	if len(out) > maxCursor {
		return "", fmt.Errorf("composite cursor of %d bytes, over %d", len(out), maxCursor)
	}
	return out, nil
}

// openCursor verifies and decodes a cursor sealCursor made for this session.
func (s *Service) openCursor(session, key, cur string) (listCursor, error) {
	var lc listCursor
	if len(cur) > maxCursor {
		return lc, errCursor
	}
	dot := bytes.LastIndexByte([]byte(cur), '.')
	if dot < 0 {
		return lc, errCursor
	}
	payload, mac := cur[:dot], cur[dot+1:]
	want, err := cursorMAC(session, key, payload)
	if err != nil || !hmac.Equal([]byte(mac), []byte(want)) {
		return lc, errCursor
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || json.Unmarshal(body, &lc) != nil {
		return lc, errCursor
	}
	for _, p := range lc.Left {
		if p.Skip < 0 {
			return lc, errCursor
		}
	}
	return lc, nil
}

func cursorMAC(session, key, payload string) (string, error) {
	k, err := hex.DecodeString(key)
	if err != nil || len(k) == 0 {
		return "", errors.New("the session has no cursor key")
	}
	h := hmac.New(sha256.New, k)
	h.Write([]byte(session))
	h.Write([]byte{0})
	h.Write([]byte(payload))
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// splice returns the JSON object obj with its top-level member key's value replaced by value
// (the bytes around it unchanged). The member must be there, once (both edges refuse
// duplicate keys).
func splice(obj []byte, key string, value []byte) ([]byte, error) {
	start, end, ok, err := jsonnav.Member(obj, key)
	switch {
	case err != nil:
		return nil, fmt.Errorf("splice %q: not an object", key)
	case !ok:
		return nil, fmt.Errorf("splice %q: no such member", key)
	}
	return jsonnav.ReplaceRange(obj, start, end, value), nil
}

// resourceIndex remembers, per aggregated session on this replica, which server listed each
// resource URI, so that resources/read goes straight to it. An entry names the earliest
// server (configuration order) that listed the URI: a later server listing it too, on any
// page, can never take it over. Bounded: URIs over jsonrpc.MaxName are not kept, a session
// keeps at most maxIndexedURIs, and past maxIndexedSessions the least recently used
// session's entries are dropped (a read then tries the servers in order, as for a URI never
// listed). Entries of ended sessions are dropped by endSession here, and age out elsewhere.
type resourceIndex struct {
	mu       sync.Mutex
	sessions map[string]*indexedSession
	clock    uint64
	bytes    int // of every session's URIs and server names
}

type indexedSession struct {
	uris  map[string]string
	used  uint64
	bytes int
}

const (
	maxIndexedSessions = 4096
	maxIndexedURIs     = 2048
	maxIndexedBytes    = 64 << 20 // all sessions; least recently used sessions go first
)

// rank is the position of server among servers (configuration order); len(servers) when it
// is not one of them.
func rank(servers []*registryv1.Server, server string) int {
	for i, srv := range servers {
		if srv.GetName() == server {
			return i
		}
	}
	return len(servers)
}

func (ix *resourceIndex) note(session, uri, server string, servers []*registryv1.Server) {
	if len(uri) > jsonrpc.MaxName {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.sessions == nil {
		ix.sessions = map[string]*indexedSession{}
	}
	ix.clock++
	e := ix.sessions[session]
	if e == nil {
		if len(ix.sessions) >= maxIndexedSessions {
			ix.evictLocked()
		}
		e = &indexedSession{uris: map[string]string{}}
		ix.sessions[session] = e
	}
	e.used = ix.clock
	if owner, ok := e.uris[uri]; ok {
		if rank(servers, server) < rank(servers, owner) {
			e.uris[uri] = server
		}
		return
	}
	if len(e.uris) >= maxIndexedURIs {
		return
	}
	e.uris[uri] = server
	n := len(uri) + len(server)
	e.bytes += n
	ix.bytes += n
	for ix.bytes > maxIndexedBytes && len(ix.sessions) > 1 {
		ix.evictLocked()
	}
}

// evictLocked drops the least recently used session's entries.
func (ix *resourceIndex) evictLocked() {
	var oldest string
	var used uint64
	for id, e := range ix.sessions {
		if oldest == "" || e.used < used {
			oldest, used = id, e.used
		}
	}
	ix.bytes -= ix.sessions[oldest].bytes
	delete(ix.sessions, oldest)
}

func (ix *resourceIndex) lookup(session, uri string) (string, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e := ix.sessions[session]
	if e == nil {
		return "", false
	}
	ix.clock++
	e.used = ix.clock
	server, ok := e.uris[uri]
	return server, ok
}

func (ix *resourceIndex) forget(session string) {
	ix.mu.Lock()
	if e := ix.sessions[session]; e != nil {
		ix.bytes -= e.bytes
		delete(ix.sessions, session)
	}
	ix.mu.Unlock()
}

// readResource routes resources/read, subscribe and unsubscribe by URI: to the server that
// listed it, else to the session's servers in configuration order until one serves it (the
// same rule that settles a URI two servers list: the earlier server wins).
func (s *Service) readResource(ctx context.Context, x *exchange, m *jsonrpc.Message, servers []*registryv1.Server, r replier) {
	s.byURI(ctx, x, m, m.Name, servers, r)
}

// byURI runs m on the server of uri: the one that listed it, else the first of the session's
// servers, in configuration order, that answers it (each try bounded by --list-timeout).
func (s *Service) byURI(ctx context.Context, x *exchange, m *jsonrpc.Message, uri string, servers []*registryv1.Server, r replier) {
	if server, ok := s.resources.lookup(x.session.ID, uri); ok {
		for _, srv := range servers {
			if srv.GetName() == server {
				s.runOn(ctx, x, srv, m, "", r)
				return
			}
		}
	}
	for _, srv := range servers {
		var got collected
		tctx, cancel := context.WithTimeout(ctx, s.cfg.ListTimeout)
		s.run(tctx, s.callOn(x, srv, m), &got)
		cancel()
		if got.refusal == nil && got.final != nil && !isErrorResponse(got.final) {
			if m.Method == "resources/read" {
				s.resources.note(x.session.ID, uri, srv.GetName(), servers)
			}
			_ = r.answer(got.final, nil)
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
	_ = r.answer(refusalResponse(m.ID, errUnknownResource, x.traceID, nil), errUnknownResource)
}

// complete routes completion/complete by its reference: a prompt by its aggregated name
// (renamed for its server), a resource or resource template by URI as resources/read is
// routed.
func (s *Service) complete(ctx context.Context, x *exchange, m *jsonrpc.Message, servers []*registryv1.Server, r replier) {
	var p struct {
		Ref struct {
			Type string `json:"type"`
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"ref"`
	}
	_ = json.Unmarshal(m.Params, &p)
	switch p.Ref.Type {
	case "ref/prompt":
		srv, own, ok := route(servers, p.Ref.Name)
		if p.Ref.Name == "" || !ok {
			_ = r.answer(refusalResponse(m.ID, errUnknownPrompt, x.traceID, nil), errUnknownPrompt)
			return
		}
		renamed, err := renameRef(m, own)
		if err != nil {
			s.answerCall(x, m, r, errInvalidMessage, err)
			return
		}
		s.run(ctx, s.callOn(x, srv, renamed), &serverReplier{replier: r, server: srv.GetName()})
	case "ref/resource":
		if p.Ref.URI != "" && len(p.Ref.URI) <= jsonrpc.MaxName {
			s.byURI(ctx, x, m, p.Ref.URI, servers, r)
			return
		}
		fallthrough
	default:
		_ = r.answer(refusalResponse(m.ID, errUnknownResource, x.traceID, nil), errUnknownResource)
	}
}

// renameRef returns a completion/complete with params.ref.name set to name.
func renameRef(m *jsonrpc.Message, name string) (*jsonrpc.Message, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(m.Params, &p); err != nil {
		return nil, err
	}
	ref, err := splice(p["ref"], "name", mustQuote(name))
	if err != nil {
		return nil, err
	}
	params, err := splice(m.Params, "ref", ref)
	if err != nil {
		return nil, err
	}
	return withParams(m, params)
}
