#!/usr/bin/env bash
# Split mode on one machine: etcd plus every service as its own process, on loopback.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:-$root/examples/gatehouse.yaml}
state=${STATE_DIR:-$root/data/split}
mkdir -p "$state" "$root/bin"
export GATEHOUSE_INTERNAL_TOKEN=${GATEHOUSE_INTERNAL_TOKEN:-$(head -c 32 /dev/urandom | base64 | tr -d '/+=')}
etcd_endpoints=${ETCD_ENDPOINTS:-127.0.0.1:2379}

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM

if [ -z "${ETCD_ENDPOINTS:-}" ]; then
  etcd --name gatehouse --data-dir "$state/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 >"$state/etcd.log" 2>&1 &
  pids+=($!)
fi

for svc in registrysvc authsvc policysvc bridgesvc auditsvc ingress; do
  (cd "$root" && go build -o "bin/$svc" "./$svc/cmd/$svc")
done
cd "$root"
bin/registrysvc -etcd-endpoints "$etcd_endpoints" -servers "$config" & pids+=($!)
bin/authsvc -etcd-endpoints "$etcd_endpoints" & pids+=($!)
bin/policysvc -registry-addr 127.0.0.1:7103 & pids+=($!)
bin/bridgesvc -registry-addr 127.0.0.1:7103 -etcd-endpoints "$etcd_endpoints" & pids+=($!)
bin/auditsvc -dir "$state/audit" & pids+=($!)
bin/ingress -etcd-endpoints "$etcd_endpoints" & pids+=($!)
# A dev token, through authsvc's Connect API (plain JSON over HTTP).
for _ in $(seq 1 50); do
  resp=$(curl -sf -H "Content-Type: application/json" -H "Gatehouse-Internal-Token: $GATEHOUSE_INTERNAL_TOKEN" \
    -d '{"principalId":"dev","tenant":"default","kind":"PRINCIPAL_KIND_USER"}' \
    http://127.0.0.1:7101/gatehouse.auth.v1.AuthService/CreateToken) && break
  sleep 0.2
done
echo "split mode up: http://127.0.0.1:8080/servers/<name>/mcp (Ctrl-C stops every process)"
echo "dev token (principal dev, tenant default): $(printf '%s' "$resp" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')"
wait
