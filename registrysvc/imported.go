package registrysvc

import (
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"
	auditv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/audit/v1"
	registryv1 "github.com/gatehouse-mcp/gatehouse/gen/gatehouse/registry/v1"
	"github.com/gatehouse-mcp/gatehouse/registrysvc/config"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Imported servers live under KeyPrefix + "imported/<name>", apart from the configuration's,
// so Seed (which makes the configuration's keys match the file) leaves them alone and they
// survive restarts. A name the configuration holds is refused at import, in the same
// transaction that writes, so an import never shadows a configured server; should a later
// configuration add an imported server's name, the configuration's server is the one the
// catalogue shows (and the imported one is logged as shadowed at Seed).

// MaxImported bounds the imported servers of the registry.
const MaxImported = 256

// ImportServers implements registryv1connect.RegistryServiceHandler.
func (s *Service) ImportServers(ctx context.Context, req *connect.Request[registryv1.ImportServersRequest]) (*connect.Response[registryv1.ImportServersResponse], error) {
	who, err := s.admin(ctx, "admin/servers.import")
	if err != nil {
		return nil, toConnect(err)
	}
	in := req.Msg.GetServers()
	if len(in) == 0 {
		return nil, toConnect(invalid("no servers to import"))
	}
	if len(in) > config.MaxServers {
		return nil, toConnect(invalid("%d servers, more than the limit of %d per import", len(in), config.MaxServers))
	}
	names := make(map[string]bool, len(in))
	servers := make([]*registryv1.Server, 0, len(in))
	for i, srv := range in {
		srv = proto.Clone(srv).(*registryv1.Server)
		srv.Imported = true
		if err := config.Validate(srv); err != nil {
			return nil, toConnect(invalid("servers[%d]: %v", i, err))
		}
		if names[srv.GetName()] {
			return nil, toConnect(invalid("servers[%d]: %q is listed twice", i, srv.GetName()))
		}
		names[srv.GetName()] = true
		servers = append(servers, srv)
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, toConnect(err)
	}
	// The catalogue as it would be: prefixes must not collide with any server's.
	s.mu.RLock()
	read := s.rev // what the checks below saw: the write applies only if imports did not move since
	all := make([]*registryv1.Server, 0, len(s.servers)+len(servers))
	imported := len(s.st.imported)
	for name, srv := range s.servers {
		if _, ok := s.st.configured[name]; ok {
			if names[name] {
				s.mu.RUnlock()
				return nil, toConnect(fmt.Errorf("%w: %q is a server of the configuration; import it under another name", errNameTaken, name))
			}
		} else if names[name] {
			imported-- // replaced
			continue
		}
		all = append(all, srv)
	}
	s.mu.RUnlock()
	if imported+len(servers) > MaxImported {
		return nil, toConnect(invalid("the registry would hold %d imported servers, more than the limit of %d", imported+len(servers), MaxImported))
	}
	if err := config.CheckPrefixes(append(all, servers...)); err != nil {
		return nil, toConnect(invalid("%v", err))
	}
	cmps := make([]clientv3.Cmp, 0, len(servers)+1)
	// The limit and the prefixes were checked against the imports as of read: a concurrent
	// import that landed since fails this one (checked and written atomically), which the
	// caller may retry.
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.importedPrefix).WithPrefix(), "<", read+1))
	ops := make([]clientv3.Op, 0, len(servers))
	for _, srv := range servers {
		b, err := protojson.Marshal(srv)
		if err != nil {
			return nil, toConnect(fmt.Errorf("encode server %q: %w", srv.GetName(), err))
		}
		// Refused in the transaction too: a Seed between the check and the write.
		cmps = append(cmps, clientv3.Compare(clientv3.Version(s.prefix+srv.GetName()), "=", 0))
		ops = append(ops, clientv3.OpPut(s.importedPrefix+srv.GetName(), string(b)))
	}
	txn, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, toConnect(fmt.Errorf("%w: write servers: %w", errStore, err))
	}
	if !txn.Succeeded {
		return nil, toConnect(fmt.Errorf("%w: the registry changed while the import was checked (another import, or a server of the configuration took one of the names); try again", errNameTaken))
	}
	if err := s.waitRev(ctx, txn.Header.Revision); err != nil {
		return nil, toConnect(err)
	}
	resp := &registryv1.ImportServersResponse{}
	for _, srv := range servers {
		resp.Imported = append(resp.Imported, srv.GetName())
		s.logger.Info("server imported", "server", srv.GetName(), "pin", srv.GetPin(), "by", who)
		s.record(ctx, &auditv1.Record{Principal: who}, srv.GetName(), "", MethodImport, auditv1.Outcome_OUTCOME_ALLOWED,
			fmt.Sprintf("imported (version %q, pin %v)", srv.GetVersion(), srv.GetPin()))
	}
	slices.Sort(resp.Imported)
	return connect.NewResponse(resp), nil
}
