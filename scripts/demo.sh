#!/usr/bin/env bash
# The demo: a simulated Azure node in network namespaces, and two pods created as kubelet creates
# them: through containerd's CRI plugin (scripts/cri-node.py, driven by tools/criclient), on the
# seed conflist unchanged (azure-vnet in transparent mode + azure-vnet-ipam on the wireserver
# source + the real portmap), our plugins installed as a node's installer does (one file under
# two names). It prints what a node operator looks at (the pods, the endpoint records, the IPAM
# pool, a pod's routes and neighbour, the node's host routes, the hostPort DNAT rule), sends
# traffic, stops and removes the pods, and shows that nothing is left.
# Everything lives in namespaces it creates and in a temp dir; all of it is removed on exit,
# even on failure. The last line is `DEMO: OK` on success.
#
#   sudo scripts/demo.sh              # kubelet's path: containerd's CRI creates the pods
#   sudo scripts/demo.sh --cnitool    # the real cnitool attaches two pods instead
#   sudo CONFLIST=conflist/ptp-azure-ipam.conflist scripts/demo.sh --cnitool   # another conflist
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '12,14p' "$0" | sed 's/^#  *//' >&2; }
MODE=cri
case "${1:-}" in
  "") ;;
  --cnitool) MODE=cnitool ;;
  -h | --help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh must run as root (network namespaces)" >&2; exit 1; }
if [ "$MODE" = cri ] && [ -n "${CONFLIST:-}" ]; then
  echo "CONFLIST is for --cnitool: the CRI demo runs the seed conflist, as AKS installs it" >&2
  exit 2
fi
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh
scripts/build-release.sh
CRICLIENT=""
[ "$MODE" = cri ] && CRICLIENT=$(scripts/build-criclient.sh)

TAG=azdemo$$
D=$(mktemp -d /tmp/azure-vnet-demo.XXXXXX)
NODE=$TAG-node-a
NODE_B=$TAG-node-b
WS_PID="" API_PID="" HOLDER_PID=""
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ] && [ -d "$D/cri" ]; then
    echo "--- the demo failed; the last lines of containerd's and the plugins' logs:" >&2
    tail -n 20 "$D/cri/holder.log" "$D/cri/containerd.log" "$D/log/azure-vnet.log" \
      "$D/log/azure-vnet-ipam.log" >&2 2>/dev/null
  fi
  # CRI: the holder stops and removes every sandbox left (their DELs run), stops containerd and
  # kills what is left under it; we wait for it, so it is reaped.
  if [ -n "$HOLDER_PID" ]; then
    scripts/cri-node.py stop "$D/cri"
    wait "$HOLDER_PID" 2>/dev/null
  fi
  if [ "$MODE" = cnitool ]; then
    for p in pod1 pod2; do
      [ -e "/var/run/netns/$TAG-$p" ] && run_cnitool del "/var/run/netns/$TAG-$p" >/dev/null 2>&1
    done
  fi
  for pid in $API_PID $WS_PID; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  scripts/testbed.sh down "$TAG"
  rm -rf "$D"
  [ "$rc" = 0 ] || echo "DEMO: FAILED (exit status $rc)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "== simulated Azure VNet: vnet router, node-a (10.224.0.4), node-b (10.224.1.4), API server ILB (10.226.0.4)"
scripts/testbed.sh up "$TAG" "$D/tb" 30

# The wireserver stand-in on node-a's loopback (the real one is 168.63.129.16).
ip netns exec "$NODE" python3 scripts/fake-wireserver.py --xml "$D/tb/node-a/nmagent.xml" \
  --port 0 --port-file "$D/ws.port" >/dev/null 2>&1 &
WS_PID=$!
for _ in $(seq 100); do [ -s "$D/ws.port" ] && break; sleep 0.05; done
[ -s "$D/ws.port" ] || { echo "the fake wireserver did not start" >&2; exit 1; }
WS_URL="http://127.0.0.1:$(cat "$D/ws.port")/machine/plugins?comp=nmagent&type=getinterfaceinfov1"
mkdir -p "$D/run" "$D/log"

# ---------------------------------------------------------------------------------------------
# The --cnitool demo: the real cnitool inside node-a, kubelet-style CNI_ARGS.

# cnitool keeps libcni's result cache in /var/lib/cni, hard-wired: each call runs in a private
# mount namespace where an overlay on /var/lib makes the mount point and the demo's own cache
# directory goes over it, so the machine's /var/lib/cni is never written.
run_cnitool() { # add|del|check netns-path [pod-name]
  local args="IgnoreUnknown=1" ov
  [ -n "${3:-}" ] && args="$args;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$3"
  ov=$(mktemp -d "$D/varlib.XXXXXX")
  mkdir -p "$D/cni-cache" "$ov/upper" "$ov/work"
  CNI_ARGS=$args unshare --mount --propagation private sh -c '
    mount -t overlay azvt-varlib -o "lowerdir=/var/lib,upperdir=$1/upper,workdir=$1/work" /var/lib &&
    mkdir -p /var/lib/cni && mount --bind "$2" /var/lib/cni && shift 2 && exec "$@"' \
    sh "$ov" "$D/cni-cache" ip netns exec "$NODE" cnitool "$1" "$NET" "$2"
}

demo_cnitool() {
  CONFLIST=${CONFLIST:-conflist/10-azure.conflist}
  NET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$CONFLIST")
  mkdir -p "$D/net.d" "$D/bin"
  cp "$CONFLIST" "$D/net.d/"
  cp -a dist/azure-vnet dist/azure-vnet-ipam "$D/bin/"   # -a: the hard link stays one file

  export NETCONFPATH=$D/net.d CNI_PATH=$D/bin:/usr/lib/cni
  export AZURE_VNET_RUN_DIR=$D/run AZURE_VNET_LOG_DIR=$D/log
  export AZURE_VNET_INTERFACES_FILE=$D/tb/node-a/interfaces.json
  export AZURE_VNET_WIRESERVER_URL=$WS_URL

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
  ip netns exec "$NODE_B" ping -c 2 -W 2 "${IP[pod1]}" || echo "(not routed with this conflist)"
  echo "== pod1 -> the API server ILB (10.226.0.4), in its delegated subnet"
  ip netns exec "$TAG-pod1" ping -c 2 -W 2 10.226.0.4 || echo "(not routed with this conflist)"

  for p in pod1 pod2; do
    echo "== cnitool del $NET /var/run/netns/$TAG-$p"
    run_cnitool del "/var/run/netns/$TAG-$p" "$p"
    ip netns del "$TAG-$p"
  done
  echo "== addresses in use after DEL: $(view inuse "$D/run")"
}

# ---------------------------------------------------------------------------------------------
# What a node operator looks at, from the CRI socket and the plugins' state files.

VIEW_PY=$(cat <<'PY'
import base64, json, os, subprocess, sys, time

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}

def prefix_len(goipnet):
    mask = base64.b64decode(goipnet.get("Mask") or "")
    return sum(bin(b).count("1") for b in mask)

def endpoints(run):
    st = load(os.path.join(run, "azure-vnet.json"))
    for iface in (st.get("Network", {}).get("ExternalInterfaces") or {}).values():
        for net in (iface.get("Networks") or {}).values():
            yield from (net.get("Endpoints") or {}).values()

def pools(run):
    st = load(os.path.join(run, "azure-vnet-ipam.json"))
    for space in (st.get("IPAM", {}).get("AddressSpaces") or {}).values():
        yield from (space.get("Pools") or {}).values()

def cri(*args):
    out = subprocess.run([os.environ["CRICLIENT"], os.environ["SOCK"], *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

def table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())

cmd = sys.argv[1]
if cmd == "pods":  # crictl pods, with each sandbox's IP
    rows = [("POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "IP")]
    for p in sorted(cri("lsp").get("items", []), key=lambda p: p.get("created_at", 0)):
        st = cri("statusp", p["id"])["status"]
        md = p["metadata"]
        age = time.time() - p.get("created_at", 0) / 1e9
        rows.append((p["id"][:13], f"{age:.0f}s ago", "Ready" if p.get("state", 0) == 0 else "NotReady",
                     md["name"], md["namespace"], md.get("attempt", 0),
                     (st.get("network") or {}).get("ip", "")))
    table(rows)
elif cmd == "records":  # azure-vnet.json's endpoint records
    rows = [("POD", "HOST VETH", "IP", "NETNS", "CONTAINER (SANDBOX)")]
    for ep in endpoints(sys.argv[2]):
        ips = ", ".join(f'{a["IP"]}/{prefix_len(a)}' for a in ep.get("IPAddresses") or [])
        pod = f'{ep.get("PODNameSpace", "")}/{ep.get("PODName", "")}'
        rows.append((pod, ep.get("HostIfName", ""), ips, ep.get("NetworkNameSpace", ""),
                     ep.get("ContainerID", "")[:13]))
    rows[1:] = sorted(rows[1:], key=lambda r: [int(x) for x in r[2].split("/")[0].split(".") if x.isdigit()])
    table(rows)
    print(f"{len(rows) - 1} endpoint record(s)")
elif cmd == "ipam":  # azure-vnet-ipam.json's pools: in use / free
    for p in pools(sys.argv[2]):
        addrs = p.get("Addresses") or {}
        used = {a: r.get("ID", "") for a, r in addrs.items() if r.get("InUse")}
        subnet = f'{p["Subnet"]["IP"]}/{prefix_len(p["Subnet"])}'
        print(f'pool {subnet} on {p.get("IfName", "?")}: {len(addrs)} addresses, '
              f'{len(used)} in use, {len(addrs) - len(used)} free')
        for a, owner in sorted(used.items()):
            print(f"  {a:<15} in use by {owner[:13]}")
elif cmd == "inuse":  # addresses in use, as a count and a list
    used = sorted(a for p in pools(sys.argv[2]) for a, r in (p.get("Addresses") or {}).items()
                  if r.get("InUse"))
    print(len(used), used)
elif cmd == "count-records":
    print(sum(1 for _ in endpoints(sys.argv[2])))
elif cmd == "count-inuse":
    print(sum(1 for p in pools(sys.argv[2]) for r in (p.get("Addresses") or {}).values()
              if r.get("InUse")))
elif cmd == "count-pods":
    print(len(cri("lsp").get("items", [])))
else:
    sys.exit(f"view: unknown command {cmd}")
PY
)
view() { CRICLIENT=$CRICLIENT SOCK=${SOCK:-} python3 -c "$VIEW_PY" "$@"; }

# ---------------------------------------------------------------------------------------------
# The CRI demo (default): containerd's CRI plugin in node-a, driven as kubelet drives it.

cri() { "$CRICLIENT" "$SOCK" "$@"; }
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
in_pod() { local pid=$1; shift; nsenter --net="/proc/$pid/ns/net" -- "$@"; }

# HTTP GET from a namespace (or a pod: "pid:<pid>"), retried for a few seconds (a server just
# started, a DNAT rule just added).
http_get() { # where url
  local where=$1 url=$2 i
  for i in $(seq 50); do
    if [ "${where#pid:}" != "$where" ]; then
      in_pod "${where#pid:}" curl -sS -m 2 "$url" 2>/dev/null && return 0
    else
      ip netns exec "$where" curl -sS -m 2 "$url" 2>/dev/null && return 0
    fi
    sleep 0.2
  done
  echo "no HTTP answer from $url" >&2
  return 1
}

demo_cri() {
  echo "== the CNI config containerd's CRI plugin loads: conflist/10-azure.conflist (the seed's, unchanged)"
  cat conflist/10-azure.conflist
  echo
  echo "== containerd's CRI plugin on node-a (scripts/cri-node.py: private mount namespace, its own /run)"
  scripts/cri-node.py containerd "$D/cri" "$NODE" --criclient "$CRICLIENT" \
    --bin dist/azure-vnet --bin dist/azure-vnet-ipam \
    --env AZURE_VNET_RUN_DIR="$D/run" --env AZURE_VNET_LOG_DIR="$D/log" \
    --env AZURE_VNET_WIRESERVER_URL="$WS_URL" > "$D/cri-node.log" 2>&1 &
  HOLDER_PID=$!
  SOCK=$(scripts/cri-node.py ready "$D/cri")
  echo "containerd $(cri --get /runtime_version version), CRI socket $SOCK"
  # The operator's tools, run on the node (its network and mount namespaces) with the paths the
  # plugins use. The first metrics run starts counting the plugins' operations.
  local tool=(scripts/cri-node.py exec "$D/cri" -- env AZURE_VNET_RUN_DIR="$D/run"
              AZURE_VNET_LOG_DIR="$D/log" "$PWD/dist/azure-vnet")
  local conf=(--conflist "$PWD/conflist/10-azure.conflist")
  "${tool[@]}" metrics "${conf[@]}" > /dev/null
  echo "== the CNI bin dir: our plugins installed as one file under two names (same inode), Debian's loopback and portmap"
  ls -li "$D/cri/cni/bin"

  # kubelet's two pods: what RunPodSandbox gets (metadata, kubelet's labels, DNS, port mappings)
  local web=(--name web --namespace default --uid 6f1d2c3b-aaaa-4bbb-8ccc-000000000001
             --port 8080:80 --log-dir "$D/pods/default_web")
  local dns=(--name coredns-like --namespace kube-system --uid 6f1d2c3b-aaaa-4bbb-8ccc-000000000002
             --log-dir "$D/pods/kube-system_coredns-like")
  echo "== RunPodSandbox default/web (hostPort 8080 -> 80)"
  cri runp "${web[@]}" > "$D/web.json"
  WEB=$(jget "$D/web.json" id)
  echo "sandbox $WEB in $(jget "$D/web.json" elapsed_ms) ms"
  echo "== CreateContainer + StartContainer: busybox httpd on port 80 in default/web"
  CTR=$(cri --get /id create "$WEB" "${web[@]}" --image localhost/rcbusybox:latest --container web \
          -- /bin/httpd -f -p 80 -h /var/www)
  cri start "$CTR" >/dev/null
  echo "container $CTR started"
  echo "== RunPodSandbox kube-system/coredns-like"
  cri runp "${dns[@]}" > "$D/dns.json"
  DNS=$(jget "$D/dns.json" id)
  echo "sandbox $DNS in $(jget "$D/dns.json" elapsed_ms) ms"

  local web_ip dns_ip web_pid dns_pid
  web_ip=$(cri --get /status/network/ip statusp "$WEB")
  dns_ip=$(cri --get /status/network/ip statusp "$DNS")
  web_pid=$(cri --get /info/info/pid statusp "$WEB" --verbose)
  dns_pid=$(cri --get /info/info/pid statusp "$DNS" --verbose)

  echo
  echo "== the pods, as crictl pods shows them (ListPodSandbox + PodSandboxStatus)"
  view pods
  echo "== endpoint records ($D/run/azure-vnet.json)"
  view records "$D/run"
  echo "== IPAM pool ($D/run/azure-vnet-ipam.json)"
  view ipam "$D/run"
  echo "== the plugins' logs ($D/log): the last ADD's lines"
  tail -n 2 "$D/log/azure-vnet-ipam.log"
  tail -n 2 "$D/log/azure-vnet.log"
  echo "== azure-vnet status"
  "${tool[@]}" status "${conf[@]}"
  echo "== azure-vnet reconcile (dry run)"
  "${tool[@]}" reconcile --grace 0.5 "${conf[@]}"
  echo "== azure-vnet metrics (the samples, without the histogram buckets)"
  "${tool[@]}" metrics "${conf[@]}" | grep -v -e '^#' -e '_bucket{' 
  echo "== default/web ($web_ip): ip addr / ip route / ip neigh, in the pod"
  in_pod "$web_pid" ip -4 addr show dev eth0
  in_pod "$web_pid" ip route
  in_pod "$web_pid" ip neigh
  echo "== node-a: ip route (a /32 host route per pod, to its azv veth)"
  ip -n "$NODE" route
  echo "== node-a: the pods' host veths"
  ip -n "$NODE" -br link | grep '^azv'
  echo "== node-a: the hostPort DNAT rule (portmap's chain for the sandbox, iptables nat table)"
  ip netns exec "$NODE" iptables-save -t nat | grep -E 'CNI-DN-'

  echo
  echo "== traffic"
  echo "-- coredns-like -> web (pod to pod, same node): ping, then HTTP"
  in_pod "$dns_pid" ping -c 2 -W 2 "$web_ip"
  echo "$(http_get "pid:$dns_pid" "http://$web_ip/")   <- http://$web_ip/"
  echo "-- node-b (10.224.1.4) -> web ($web_ip), across the VNet"
  echo "$(http_get "$NODE_B" "http://$web_ip/")   <- http://$web_ip/"
  echo "-- node-b -> node-a's hostPort 8080 (DNAT to $web_ip:80)"
  echo "$(http_get "$NODE_B" "http://10.224.0.4:8080/")   <- http://10.224.0.4:8080/"
  echo "-- web -> the API server ILB (10.226.0.4, in its delegated subnet): ping, then HTTP on 443"
  mkdir -p "$D/api" && echo "api server" > "$D/api/index.html"
  ip netns exec "$TAG-api" busybox httpd -f -p 443 -h "$D/api" >/dev/null 2>&1 &
  API_PID=$!
  in_pod "$web_pid" ping -c 2 -W 2 10.226.0.4
  echo "$(http_get "pid:$web_pid" "http://10.226.0.4:443/")   <- http://10.226.0.4:443/"

  echo
  echo "== StopPodSandbox + RemovePodSandbox (kubelet's order; each runs a CNI DEL)"
  local id name
  for id in "$WEB" "$DNS"; do
    [ "$id" = "$WEB" ] && name=default/web || name=kube-system/coredns-like
    echo "$name: StopPodSandbox $(cri --get /elapsed_ms stopp "$id") ms, RemovePodSandbox $(cri --get /elapsed_ms rmp "$id") ms"
  done

  echo "== what is left on node-a"
  local azv=1 i
  for i in $(seq 100); do # the host veths go with the pods' network namespaces, asynchronously
    azv=$(ip -n "$NODE" -br link | grep -c '^azv' || true)
    [ "$azv" = 0 ] && break
    sleep 0.2
  done
  local pods inuse recs routes dnat pins cache
  pods=$(view count-pods)
  inuse=$(view count-inuse "$D/run")
  recs=$(view count-records "$D/run")
  routes=$(ip -n "$NODE" route | grep -c ' dev azv' || true)
  dnat=$(ip netns exec "$NODE" iptables-save -t nat | grep -cE 'CNI-DN-|DNAT --to-destination' || true)
  pins=$(scripts/cri-node.py exec "$D/cri" ls /run/netns | wc -l)
  cache=$(find "$D/cri/cni-cache/results" -type f 2>/dev/null | wc -l)
  printf '%-34s %s\n' "sandboxes (ListPodSandbox):" "$pods" \
    "addresses in use (IPAM):" "$inuse" "endpoint records:" "$recs" \
    "host routes to azv veths:" "$routes" "azv links:" "$azv" "hostPort DNAT rules:" "$dnat" \
    "pod netns pins (/run/netns):" "$pins" "libcni cached results:" "$cache"
  view ipam "$D/run"
  [ "$pods$inuse$recs$routes$azv$dnat$pins$cache" = 00000000 ] || { echo "something is left" >&2; exit 1; }
}

if [ "$MODE" = cri ]; then demo_cri; else demo_cnitool; fi
echo "DEMO: OK"
