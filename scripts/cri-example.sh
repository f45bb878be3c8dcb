#!/usr/bin/env bash
# The CRI harness from a shell, as scripts/demo.sh and scripts/bench.sh can use it: a simulated
# node, the fake wireserver, containerd's CRI plugin on the seed conflist (scripts/cri-node.py),
# and kubelet's calls through the CRI client (tools/criclient): two pods, one with a hostPort and
# an httpd container, traffic, then StopPodSandbox + RemovePodSandbox. Everything it creates is
# removed on exit, even on failure.
#
#   sudo scripts/cri-example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/cri-example.sh must run as root (network namespaces)" >&2; exit 1; }
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

CRICLIENT=$(scripts/build-criclient.sh)
scripts/build-release.sh   # dist/azure-vnet and dist/azure-vnet-ipam: one file, two names
TAG=azcri$$
D=$(mktemp -d /tmp/azvt-cri-example.XXXXXX)
NODE=$TAG-node-a
WS_PID="" HOLDER_PID=""
cleanup() {
  set +e
  # the holder stops and removes every sandbox through CRI (their DELs run), then stops
  # containerd and kills what is left; we wait for it, so it is reaped
  [ -n "$HOLDER_PID" ] && scripts/cri-node.py stop "$D/cri" && wait "$HOLDER_PID"
  [ -n "$WS_PID" ] && kill "$WS_PID" && wait "$WS_PID"
  scripts/testbed.sh down "$TAG"
  rm -rf "$D"
}
trap cleanup EXIT

scripts/testbed.sh up "$TAG" "$D/tb" 30
ip netns exec "$NODE" python3 scripts/fake-wireserver.py --xml "$D/tb/node-a/nmagent.xml" \
  --port 0 --port-file "$D/ws.port" >/dev/null 2>&1 &
WS_PID=$!
for _ in $(seq 100); do [ -s "$D/ws.port" ] && break; sleep 0.05; done
WS="http://127.0.0.1:$(cat "$D/ws.port")/machine/plugins?comp=nmagent&type=getinterfaceinfov1"

mkdir -p "$D/run" "$D/log"
scripts/cri-node.py containerd "$D/cri" "$NODE" --criclient "$CRICLIENT" \
  --bin dist/azure-vnet --bin dist/azure-vnet-ipam \
  --env AZURE_VNET_RUN_DIR="$D/run" --env AZURE_VNET_LOG_DIR="$D/log" \
  --env AZURE_VNET_WIRESERVER_URL="$WS" > "$D/cri-node.log" 2>&1 &
HOLDER_PID=$!
SOCK=$(scripts/cri-node.py ready "$D/cri")
cri() { "$CRICLIENT" "$SOCK" "$@"; }
echo "== containerd's CRI: $(cri --get /runtime_version version) on $SOCK"

WEB=(--name web --namespace default --uid 11111111-aaaa-4bbb-8ccc-000000000001 --port 8080:80
     --log-dir "$D/pods/web")
DB=(--name db --namespace kube-system --uid 22222222-aaaa-4bbb-8ccc-000000000002)
P1=$(cri --get /id runp "${WEB[@]}")
echo "== RunPodSandbox web: $P1 ($(cri --get /elapsed_ms statusp "$P1") ms status)"
P2=$(cri --get /id runp "${DB[@]}")
C1=$(cri --get /id create "$P1" "${WEB[@]}" --image localhost/rcbusybox:latest --container web \
       -- /bin/httpd -f -p 80 -h /var/www)
cri start "$C1" >/dev/null
IP1=$(cri --get /status/network/ip statusp "$P1")
IP2=$(cri --get /status/network/ip statusp "$P2")
PID2=$(cri --get /info/info/pid statusp "$P2" --verbose)
echo "== web $IP1 (hostPort 8080), db $IP2"
sleep 0.2
echo "== node-b -> node-a:8080: $(ip netns exec "$TAG-node-b" curl -sS -m 3 http://10.224.0.4:8080/)"
echo "== db -> web: $(nsenter --net=/proc/"$PID2"/ns/net curl -sS -m 3 "http://$IP1/")"
for p in "$P1" "$P2"; do
  echo "== StopPodSandbox $(cri --get /elapsed_ms stopp "$p") ms, RemovePodSandbox $(cri --get /elapsed_ms rmp "$p") ms"
done
echo "== addresses in use: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([a for s in d["IPAM"]["AddressSpaces"].values() for p in s["Pools"].values() for a,r in p["Addresses"].items() if r.get("InUse")])' "$D/run/azure-vnet-ipam.json")"
