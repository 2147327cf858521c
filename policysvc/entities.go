package policysvc

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cedar-policy/cedar-go/types"
	policyv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/policy/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/policysvc/cedarpolicy"
)

// requestEntities is the entity store of one Check: the principal, the server and the tool,
// resource or prompt acted on, plus the schema's action entities. A fixed struct rather than
// a map, because Cedar looks up only these few. The principal is built only if a policy
// looks at it (its attributes or groups); used by one goroutine.
type requestEntities struct {
	sub       *policyv1.Subject
	principal types.Entity
	built     bool
	server    types.Entity
	item      types.Entity // zero when the resource is the server itself
	bundle    *cedarpolicy.Bundle
	cache     *principalCache
}

// Get implements types.EntityGetter.
func (e *requestEntities) Get(uid types.EntityUID) (types.Entity, bool) {
	switch {
	case uid == e.server.UID:
		return e.server, true
	case uid.Type == cedarpolicy.TypePrincipal && uid.ID == types.String(e.sub.GetId()):
		if !e.built {
			e.principal = e.cache.get(e.sub)
			e.built = true
		}
		return e.principal, true
	case !e.item.UID.IsZero() && uid == e.item.UID:
		return e.item, true
	case uid.Type == cedarpolicy.TypeAction:
		return e.bundle.Action(uid)
	}
	return types.Entity{}, false
}

// principalEntity is Gatehouse::Principal: in its groups and its tenant, with attributes
// tenant and kind.
func principalEntity(id, tenant, kind string, groups []string) types.Entity {
	tenantUID := types.NewEntityUID(cedarpolicy.TypeTenant, types.String(tenant))
	parents := make([]types.EntityUID, 0, len(groups)+1)
	parents = append(parents, tenantUID)
	for _, g := range groups {
		parents = append(parents, types.NewEntityUID(cedarpolicy.TypeGroup, types.String(g)))
	}
	return types.Entity{
		UID:     types.NewEntityUID(cedarpolicy.TypePrincipal, types.String(id)),
		Parents: types.NewEntityUIDSet(parents...),
		Attributes: types.NewRecord(types.RecordMap{
			"tenant": tenantUID,
			"kind":   types.String(kind),
		}),
	}
}

// serverEntity is Gatehouse::Server with the tenants the registry approved it for.
func serverEntity(srv *registryv1.Server) types.Entity {
	tenants := make([]types.Value, 0, len(srv.GetTenants()))
	for _, t := range srv.GetTenants() {
		tenants = append(tenants, types.NewEntityUID(cedarpolicy.TypeTenant, types.String(t)))
	}
	return types.Entity{
		UID:        types.NewEntityUID(cedarpolicy.TypeServer, types.String(srv.GetName())),
		Attributes: types.NewRecord(types.RecordMap{"tenants": types.NewSet(tenants...)}),
	}
}

// itemType is the entity type of the named thing a method acts on; ok is false for methods
// that act on no named thing (they act on the server).
func itemType(action string) (types.EntityType, bool) {
	switch action {
	case "tools/call":
		return cedarpolicy.TypeTool, true
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		return cedarpolicy.TypeResource, true
	case "prompts/get":
		return cedarpolicy.TypePrompt, true
	}
	return "", false
}

// itemEntity is a Gatehouse::Tool, Resource or Prompt: id "<server>/<name>", a member of
// its server, with attributes server and name.
func itemEntity(typ types.EntityType, server types.EntityUID, name string) types.Entity {
	return types.Entity{
		UID:     types.NewEntityUID(typ, server.ID+"/"+types.String(name)),
		Parents: types.NewEntityUIDSet(server),
		Attributes: types.NewRecord(types.RecordMap{
			"server": server,
			"name":   types.String(name),
		}),
	}
}

// Bounds on the entity cache; past them it starts over (servers, principals) or stops adding
// (items).
const (
	maxCachedServers    = 4096
	maxCachedItems      = 1024 // per server
	maxCachedPrincipals = 4096
)

// principalCache keeps the principal entities built for subjects, keyed by id and used only
// when every field of the subject is the same (a principal's groups or kind may change
// between its tokens). Entities are never modified once built, so they are shared between
// Checks. A principal calls again and again; building its entity was a tenth of a Check's
// allocations.
type principalCache struct {
	mu sync.RWMutex
	m  map[string]*cachedPrincipal
}

type cachedPrincipal struct {
	tenant, kind string
	groups       []string
	entity       types.Entity
}

// get returns the entity of sub, building it when the cache holds no entity of that very
// subject.
func (c *principalCache) get(sub *policyv1.Subject) types.Entity {
	id, tenant, kind, groups := sub.GetId(), sub.GetTenant(), sub.GetKind(), sub.GetGroups()
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	if ok && e.tenant == tenant && e.kind == kind && slices.Equal(e.groups, groups) {
		return e.entity
	}
	e = &cachedPrincipal{tenant: tenant, kind: kind, groups: slices.Clone(groups), entity: principalEntity(id, tenant, kind, groups)}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedPrincipals {
		c.m = make(map[string]*cachedPrincipal)
	}
	c.m[id] = e
	c.mu.Unlock()
	return e.entity
}

// serverCache keeps the entities built for each catalog entry, keyed by the entry's pointer:
// the catalog replaces an entry rather than modifying it, so a new pointer means new data.
// Most Checks therefore build neither the server entity nor the tool entity.
type serverCache struct {
	mu sync.RWMutex
	m  map[string]*cachedServer
}

type cachedServer struct {
	src    *registryv1.Server
	entity types.Entity
	items  sync.Map // itemKey → types.Entity
	nItems atomic.Int32
}

type itemKey struct {
	typ  types.EntityType
	name string
}

// server returns the cache entry of srv, building it when srv is new.
func (c *serverCache) server(srv *registryv1.Server) *cachedServer {
	name := srv.GetName()
	c.mu.RLock()
	e, ok := c.m[name]
	c.mu.RUnlock()
	if ok && e.src == srv {
		return e
	}
	e = &cachedServer{src: srv, entity: serverEntity(srv)}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedServers {
		c.m = make(map[string]*cachedServer)
	}
	c.m[name] = e
	c.mu.Unlock()
	return e
}

// item returns the tool, resource or prompt entity named name on this server.
func (e *cachedServer) item(typ types.EntityType, name string) types.Entity {
	k := itemKey{typ, name}
	if v, ok := e.items.Load(k); ok {
		return v.(types.Entity)
	}
	ent := itemEntity(typ, e.entity.UID, name)
	if e.nItems.Add(1) <= maxCachedItems {
		e.items.Store(k, ent)
	}
	return ent
}
