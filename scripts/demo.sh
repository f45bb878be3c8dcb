#!/usr/bin/env bash
# The demo: a simulated Azure node in network namespaces, the real cnitool attaching two pods
# through the seed conflist (azure-vnet in transparent mode + azure-vnet-ipam on the wireserver
# source + the real portmap), then the ADD results, the state files, the datapath, and pings.
# Everything lives in namespaces it creates and in a temp dir; all of it is removed on exit.
#
#   sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh must run as root (network namespaces)" >&2; exit 1; }
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh
scripts/build-release.sh

TAG=azdemo$$
D=$(mktemp -d /tmp/azure-vnet-demo.XXXXXX)
NODE=$TAG-node-a
WS_PID=""
cleanup() {
  set +e
  [ -n "$WS_PID" ] && kill "$WS_PID" 2>/dev/null
  for p in pod1 pod2; do
    [ -e "/var/run/netns/$TAG-$p" ] && run_cnitool del "/var/run/netns/$TAG-$p" >/dev/null 2>&1
  done
  scripts/testbed.sh down "$TAG"
  rm -rf "$D"
}
trap cleanup EXIT

CONFLIST=${CONFLIST:-conflist/10-azure.conflist}
NET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$CONFLIST")
mkdir -p "$D/net.d" "$D/run" "$D/log" "$D/bin"
cp "$CONFLIST" "$D/net.d/"
cp dist/azure-vnet dist/azure-vnet-ipam "$D/bin/"

echo "== simulated Azure VNet: vnet router, node-a (10.224.0.4), node-b (10.224.1.4), API server ILB (10.226.0.4)"
scripts/testbed.sh up "$TAG" "$D/tb" 30

# The wireserver stand-in on node-a's loopback (the real one is 168.63.129.16).
ip netns exec "$NODE" python3 scripts/fake-wireserver.py --xml "$D/tb/node-a/nmagent.xml" \
  --port 0 --port-file "$D/ws.port" >/dev/null 2>&1 &
WS_PID=$!
for _ in $(seq 100); do [ -s "$D/ws.port" ] && break; sleep 0.05; done

export NETCONFPATH=$D/net.d CNI_PATH=$D/bin:/usr/lib/cni
export AZURE_VNET_RUN_DIR=$D/run AZURE_VNET_LOG_DIR=$D/log
export AZURE_VNET_INTERFACES_FILE=$D/tb/node-a/interfaces.json
export AZURE_VNET_WIRESERVER_URL="http://127.0.0.1:$(cat "$D/ws.port")/machine/plugins?comp=nmagent&type=getinterfaceinfov1"

run_cnitool() { # add|del|check netns-path [pod-name]
  local args="IgnoreUnknown=1"
  [ -n "${3:-}" ] && args="$args;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3"
  CNI_ARGS=$args ip netns exec "$NODE" cnitool "$1" "$NET" "$2"
}

echo "== conflist ($CONFLIST)"
cat "$CONFLIST"
declare -A IP
for p in pod1 pod2; do
  ip netns add "$TAG-$p"
  ip -n "$TAG-$p" link set lo up
  echo "== cnitool add $NET /var/run/netns/$TAG-$p   (in node-a)"
  run_cnitool add "/var/run/netns/$TAG-$p" "$p" | tee "$D/$p.json"
  echo
  IP[$p]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$D/$p.json")
done

echo "== $AZURE_VNET_RUN_DIR/azure-vnet-ipam.json"
cat "$D/run/azure-vnet-ipam.json"; echo
if [ -f "$D/run/azure-vnet.json" ]; then echo "== $AZURE_VNET_RUN_DIR/azure-vnet.json"; cat "$D/run/azure-vnet.json"; echo; fi

echo "== pod1 (${IP[pod1]}): ip addr / ip route / ip neigh"
ip -n "$TAG-pod1" -4 addr show dev eth0
ip -n "$TAG-pod1" route
ip -n "$TAG-pod1" neigh
echo "== node-a: ip route"
ip -n "$NODE" route
echo "== ping pod1 -> pod2 (${IP[pod2]})"
ip netns exec "$TAG-pod1" ping -c 3 -W 2 "${IP[pod2]}"
echo "== ping node-b (10.224.1.4) -> pod1 (${IP[pod1]}), across the VNet"
ip netns exec "$TAG-node-b" ping -c 2 -W 2 "${IP[pod1]}" || echo "(not routed with this conflist)"
echo "== pod1 -> the API server ILB (10.226.0.4), in its delegated subnet"
ip netns exec "$TAG-pod1" ping -c 2 -W 2 10.226.0.4 || echo "(not routed with this conflist)"

for p in pod1 pod2; do
  echo "== cnitool del $NET /var/run/netns/$TAG-$p"
  run_cnitool del "/var/run/netns/$TAG-$p" "$p"
  ip netns del "$TAG-$p"
done
echo "== addresses in use after DEL: $(python3 - "$D/run/azure-vnet-ipam.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
used = [a for sp in s["IPAM"]["AddressSpaces"].values() for p in sp["Pools"].values()
        for a, r in p["Addresses"].items() if r["InUse"]]
print(len(used), used)
PY
)"
echo "DEMO: OK"
