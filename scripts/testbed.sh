#!/usr/bin/env bash
# A simulated Azure VNet in network namespaces (docs: README "The testbed").
#
#   testbed.sh up   <tag> <dir> [secondaries-per-node, default 30]
#   testbed.sh nic  <tag> <dir> [secondaries, default 5]   (a second NIC on node-a, see nic())
#   testbed.sh down <tag>
#
# Creates namespaces <tag>-vnet (the VNet fabric), <tag>-node-a and <tag>-node-b (two VMs),
# <tag>-api (the API server's internal load balancer in a delegated subnet). Nothing is added
# to the machine's own namespace and no namespace is connected to it.
#
#   node-a  eth0 00:0d:3a:4b:1c:2d  10.224.0.4/16  secondaries 10.224.0.5 ...
#   node-b  eth0 00:0d:3a:4b:1c:3d  10.224.1.4/16  secondaries 10.224.1.5 ...
#   api     eth0                    10.226.0.4/28  (subnet 10.226.0.0/28, gateway 10.226.0.1)
#
# The fabric, like Azure's: the gateway 10.224.0.1 is on every node-facing port, the ports
# answer ARP for everything they route elsewhere (proxy ARP), and every secondary IP has a /32
# route via the primary IP of the node that owns it. Each node gets <dir>/<node>/interfaces.json
# (upstream's format) and <dir>/<node>/nmagent.xml (the wireserver's answer) listing its NIC.
set -euo pipefail

usage() { sed -n '2,7p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 tag=$2

down() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${tag}-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

sysctls() { # ns key=value...
  local ns=$1; shift
  local kv
  for kv in "$@"; do ip netns exec "$ns" sysctl -qw "$kv" >/dev/null; done
}

node_files() { # name mac primary first-secondary-prefix count dir
  local name=$1 mac=$2 primary=$3 base=$4 count=$5 d=$6/$1
  mkdir -p "$d"
  local i addrs_json="" addrs_xml=""
  addrs_json="{\"Address\":\"$primary\",\"IsPrimary\":true}"
  addrs_xml="      <IPAddress Address=\"$primary\" IsPrimary=\"true\"/>"
  for i in $(seq 5 $((4 + count))); do
    addrs_json+=",{\"Address\":\"$base.$i\",\"IsPrimary\":false}"
    addrs_xml+=$'\n'"      <IPAddress Address=\"$base.$i\" IsPrimary=\"false\"/>"
  done
  local macu
  macu=$(echo "$mac" | tr -d : | tr a-f A-F)
  printf '{"Interfaces":[{"MacAddress":"%s","IsPrimary":true,"IPSubnets":[{"Prefix":"10.224.0.0/16","IPAddresses":[%s]}]}]}\n' \
    "$macu" "$addrs_json" > "$d/interfaces.json"
  cat > "$d/nmagent.xml" <<XML
<Interfaces>
  <Interface MacAddress="$macu" IsPrimary="true">
    <IPSubnet Prefix="10.224.0.0/16">
$addrs_xml
    </IPSubnet>
  </Interface>
</Interfaces>
XML
}

up() {
  local dir=$1 count=${2:-30}
  [ "$count" -ge 1 ] && [ "$count" -le 250 ] || { echo "secondaries must be 1..250" >&2; exit 2; }
  local vnet=$tag-vnet api=$tag-api
  ip netns add "$vnet"
  ip -n "$vnet" link set lo up
  sysctls "$vnet" net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

  local batch
  batch=$(mktemp)
  for spec in "a 00:0d:3a:4b:1c:2d 10.224.0" "b 00:0d:3a:4b:1c:3d 10.224.1"; do
    set -- $spec
    local n=$1 mac=$2 base=$3 ns=$tag-node-$1 port=p$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "$port" netns "$vnet" type veth peer name eth0 netns "$ns" address "$mac"
    sysctls "$ns" net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2
    ip -n "$ns" addr add "$base.4/16" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 10.224.0.1 dev eth0
    ip -n "$vnet" addr add 10.224.0.1/32 dev "$port"
    ip -n "$vnet" link set "$port" up
    # proxy_delay: the kernel otherwise holds proxy ARP replies back up to 0.8 s.
    sysctls "$vnet" "net.ipv4.conf.$port.proxy_arp=1" "net.ipv4.neigh.$port.proxy_delay=0"
    echo "route add $base.4/32 dev $port" >> "$batch"
    for i in $(seq 5 $((4 + count))); do
      echo "route add $base.$i/32 via $base.4 dev $port onlink" >> "$batch"
    done
    node_files "node-$n" "$mac" "$base.4" "$base" "$count" "$dir"
  done
  ip -n "$vnet" -batch "$batch"
  rm -f "$batch"

  ip netns add "$api"
  ip -n "$api" link set lo up
  ip link add papi netns "$vnet" type veth peer name eth0 netns "$api"
  ip -n "$api" addr add 10.226.0.4/28 dev eth0
  ip -n "$api" link set eth0 up
  ip -n "$api" route add default via 10.226.0.1 dev eth0
  ip -n "$vnet" addr add 10.226.0.1/28 dev papi
  ip -n "$vnet" link set papi up
}

# A second NIC on node-a (what Azure attaches to a running VM): eth1 00:0d:3a:4b:1c:2e,
# 10.225.0.4/16 in its own subnet, <count> secondaries 10.225.0.5...; the VNet routes them to it.
# node-a's interfaces.json and nmagent.xml list it after the primary NIC (IsPrimary=false).
nic() {
  local dir=$1 count=${2:-5} ns=$tag-node-a vnet=$tag-vnet mac=00:0d:3a:4b:1c:2e port=pa1
  ip link add "$port" netns "$vnet" type veth peer name eth1 netns "$ns" address "$mac"
  ip -n "$ns" addr add 10.225.0.4/16 dev eth1
  ip -n "$ns" link set eth1 up
  ip -n "$vnet" addr add 10.225.0.1/32 dev "$port"
  ip -n "$vnet" link set "$port" up
  sysctls "$vnet" "net.ipv4.conf.$port.proxy_arp=1" "net.ipv4.neigh.$port.proxy_delay=0"
  ip -n "$vnet" route add 10.225.0.4/32 dev "$port"
  local i json="{\"Address\":\"10.225.0.4\",\"IsPrimary\":true}"
  local xml="      <IPAddress Address=\"10.225.0.4\" IsPrimary=\"true\"/>"
  for i in $(seq 5 $((4 + count))); do
    ip -n "$vnet" route add "10.225.0.$i/32" via 10.225.0.4 dev "$port" onlink
    json+=",{\"Address\":\"10.225.0.$i\",\"IsPrimary\":false}"
    xml+=$'\n'"      <IPAddress Address=\"10.225.0.$i\" IsPrimary=\"false\"/>"
  done
  local d=$dir/node-a
  python3 - "$d/interfaces.json" "$json" <<'PY'
import json, sys
path, addrs = sys.argv[1], json.loads("[" + sys.argv[2] + "]")
doc = json.load(open(path))
doc["Interfaces"].append({"MacAddress": "000D3A4B1C2E", "IsPrimary": False,
    "IPSubnets": [{"Prefix": "10.225.0.0/16", "IPAddresses": addrs}]})
json.dump(doc, open(path, "w"))
PY
  local body
  body=$(grep -v '</Interfaces>' "$d/nmagent.xml")
  printf '%s\n  <Interface MacAddress="000D3A4B1C2E" IsPrimary="false">\n    <IPSubnet Prefix="10.225.0.0/16">\n%s\n    </IPSubnet>\n  </Interface>\n</Interfaces>\n' \
    "$body" "$xml" > "$d/nmagent.xml"
}

case $cmd in
  nic)
    [ $# -ge 3 ] || usage
    nic "$3" "${4:-5}"
    ;;
  up)
    [ $# -ge 3 ] || usage
    trap 'down' ERR
    up "$3" "${4:-30}"
    ;;
  down) down ;;
  *) usage ;;
esac
