#!/usr/bin/env bash
# Split mode on one machine: etcd (TLS with client-certificate authentication) plus every
# service as its own process, on loopback.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:-$root/examples/gatehouse.yaml}
state=${STATE_DIR:-$root/data/split}
mkdir -p "$state" "$root/bin"
chmod 700 "$state"
# Secrets travel in the environment or in files, never on command lines (/proc/PID/cmdline is
# world-readable).
export GATEHOUSE_INTERNAL_TOKEN=${GATEHOUSE_INTERNAL_TOKEN:-$(head -c 32 /dev/urandom | base64 | tr -d '/+=')}
certs=${ETCD_CERTS_DIR:-$state/certs}
etcd_endpoints=${ETCD_ENDPOINTS:-https://127.0.0.1:2379}

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM

for svc in registrysvc authsvc policysvc bridgesvc auditsvc ingress; do
  (cd "$root" && go build -o "bin/$svc" "./$svc/cmd/$svc")
done
(cd "$root" && go build -o bin/gatehouse ./cmd/gatehouse)

if [ -z "${ETCD_ENDPOINTS:-}" ]; then
  # Our own etcd: a fresh development CA, a server certificate for loopback and one client
  # certificate for the services; etcd refuses clients without it. The peer listener (one
  # member has no peers, but etcd always opens it) wants a certificate of the same CA too,
  # and the v3 JSON gateway is off.
  [ -f "$certs/client.pem" ] || "$root/bin/gatehouse" dev certs "$certs" >/dev/null
  etcd --name gatehouse --data-dir "$state/etcd" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --listen-peer-urls https://127.0.0.1:2380 --initial-advertise-peer-urls https://127.0.0.1:2380 \
    --initial-cluster gatehouse=https://127.0.0.1:2380 \
    --peer-client-cert-auth --peer-trusted-ca-file "$certs/ca.pem" \
    --peer-cert-file "$certs/server.pem" --peer-key-file "$certs/server-key.pem" \
    --client-cert-auth --trusted-ca-file "$certs/ca.pem" \
    --cert-file "$certs/server.pem" --key-file "$certs/server-key.pem" \
    --enable-grpc-gateway=false >"$state/etcd.log" 2>&1 &
  pids+=($!)
fi
etcd_tls=(-etcd-endpoints "$etcd_endpoints" -etcd-ca-file "$certs/ca.pem"
  -etcd-cert-file "$certs/client.pem" -etcd-key-file "$certs/client-key.pem")

cd "$root"
bin/registrysvc "${etcd_tls[@]}" -servers "$config" & pids+=($!)
# The first operator's token (principal admin of tenant default, in gatehouse-admins, which the
# shipped policies let administer): authsvc registers it at start; it is also a host's token.
admin_token=${GATEHOUSE_BOOTSTRAP_ADMIN_TOKEN:-gh_$(head -c 32 /dev/urandom | base64 | tr -d '/+=')}
GATEHOUSE_BOOTSTRAP_ADMIN_TOKEN=$admin_token bin/authsvc "${etcd_tls[@]}" & pids+=($!)
bin/policysvc -registry-addr 127.0.0.1:7103 "${etcd_tls[@]}" & pids+=($!)
bin/bridgesvc -registry-addr 127.0.0.1:7103 -audit-addr 127.0.0.1:7105 -state-dir "$state/bridge" "${etcd_tls[@]}" & pids+=($!)
bin/auditsvc -dir "$state/audit" & pids+=($!)
bin/ingress "${etcd_tls[@]}" & pids+=($!)
echo "split mode up: http://127.0.0.1:8080/servers/<name>/mcp (Ctrl-C stops every process)"
echo "operator token (principal admin, tenant default, group gatehouse-admins; GATEHOUSE_ADMIN_TOKEN for gatehouse token and policy apply): $admin_token"
wait
