#!/usr/bin/env bash
# twill demo: a 3-node bridge-host-gw cluster on this one machine, built from network namespaces.
#
#   fabric ns: one L2 segment (bridge "underlay")   <- the nodes' eth0 hang here
#   node ns n1..n3: node IP 10.99.0.N/24, pod subnet 10.244.N.0/24 (flannel subnet file),
#                   peers file listing every node: twill routes other nodes' pod subnets via them
#   pod ns: attached by running bridge-host-gw with the node ns as its host (as a runtime would)
#
# Prints a table (node, pod, IP, ADD time, cross-node pings), then removes everything it made.
# The root network namespace is never touched: every link, route and rule lives in these netns.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TWILL_BIN_DIR:-$ROOT/target/release}
PLUGIN=$BIN/bridge-host-gw
NODES=${NODES:-3}
PODS=${PODS:-3}
TAG="twd$$"
WORK=$(mktemp -d "/tmp/twill-demo.XXXXXX")
NAMESPACES=()

[ -x "$PLUGIN" ] || { echo "missing $PLUGIN: run 'make build' first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "the demo needs root (network namespaces)" >&2; exit 1; }

cleanup() {
  set +e
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

mkns() { ip netns add "$1"; NAMESPACES+=("$1"); ip -n "$1" link set lo up; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

# cni NODE COMMAND CONTAINER_ID [NETNS]: run the plugin on NODE as a runtime would.
cni() {
  local node=$1 cmd=$2 cid=$3 netns=${4:-}
  CNI_COMMAND=$cmd CNI_CONTAINERID=$cid CNI_NETNS=$netns CNI_IFNAME=eth0 CNI_PATH=$BIN \
    nsenter --net="/run/netns/$node" "$PLUGIN" <"$WORK/$node/net.json"
}

echo "== building a ${NODES}-node cluster in namespaces (tag $TAG)"
FABRIC="$TAG-fabric"
mkns "$FABRIC"
ip -n "$FABRIC" link add underlay type bridge
ip -n "$FABRIC" link set underlay up

PEERS="["
for i in $(seq 1 "$NODES"); do
  PEERS+="{\"nodeIP\":\"10.99.0.$i\",\"podCIDR\":\"10.244.$i.0/24\"}"
  [ "$i" -lt "$NODES" ] && PEERS+=","
done
PEERS+="]"

for i in $(seq 1 "$NODES"); do
  node="$TAG-n$i"
  mkns "$node"
  ip link add "$TAG-u$i" netns "$FABRIC" type veth peer name eth0 netns "$node"
  ip -n "$FABRIC" link set "$TAG-u$i" master underlay up
  ip -n "$node" addr add "10.99.0.$i/24" dev eth0
  ip -n "$node" link set eth0 up
  mkdir -p "$WORK/$node/data" "$WORK/$node/run"
  cat >"$WORK/$node/subnet.env" <<SUBNET
FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.$i.1/24
FLANNEL_MTU=1500
FLANNEL_IPMASQ=false
SUBNET
  echo "$PEERS" >"$WORK/$node/peers.json"
  cat >"$WORK/$node/net.json" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "demo",
  "type": "bridge-host-gw",
  "bridge": "cni0",
  "subnetFile": "$WORK/$node/subnet.env",
  "dataDir": "$WORK/$node/data",
  "runDir": "$WORK/$node/run",
  "peersFile": "$WORK/$node/peers.json"
}
CONF
done

declare -A POD_IP POD_NODE POD_MS
POD_LIST=()
echo "== adding ${PODS} pods per node"
for i in $(seq 1 "$NODES"); do
  node="$TAG-n$i"
  for p in $(seq 1 "$PODS"); do
    pod="$TAG-n$i-p$p"
    mkns "$pod"
    t0=$(date +%s%N)
    out=$(cni "$node" ADD "$pod" "/run/netns/$pod")
    t1=$(date +%s%N)
    ip=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
    POD_IP[$pod]=$ip; POD_NODE[$pod]=$i; POD_MS[$pod]=$(( (t1 - t0) / 1000 ))
    POD_LIST+=("$pod")
  done
done

ping_ok() { in_ns "$1" ping -c1 -W1 -q "$2" >/dev/null 2>&1; }

printf '\n%-6s %-4s %-13s %9s  %s\n' node pod IP "ADD ms*" "pings: every other pod / own node / other node"
total=0; good=0
for pod in "${POD_LIST[@]}"; do
  i=${POD_NODE[$pod]}
  ok=0; n=0
  for other in "${POD_LIST[@]}"; do
    [ "$other" = "$pod" ] && continue
    n=$((n+1)); ping_ok "$pod" "${POD_IP[$other]}" && ok=$((ok+1))
  done
  own="fail"; ping_ok "$pod" "10.99.0.$i" && own="ok"
  j=$(( i % NODES + 1 )); far="fail"; ping_ok "$pod" "10.99.0.$j" && far="ok"
  total=$((total+n+2)); good=$((good+ok)); [ $own = ok ] && good=$((good+1)); [ $far = ok ] && good=$((good+1))
  us=${POD_MS[$pod]}
  printf '%-6s %-4s %-13s %9s  %d/%d pods, node %s, node n%d %s\n' "n$i" "${pod##*-}" "${POD_IP[$pod]}" \
    "$((us/1000)).$(printf '%03d' $((us%1000)))" "$ok" "$n" "$own" "$j" "$far"
done
echo
echo "* ADD ms: wall time of 'nsenter --net=NODE bridge-host-gw' as the demo runs it (the first pod"
echo "  of a node also creates the bridge and the ipMasq rule set); make bench measures the plugin alone."
echo
echo "routes on n1 (twill-owned peer routes, proto 116, via the other nodes):"
ip -n "$TAG-n1" route show | sed 's/^/  /'

echo "== deleting every pod"
for pod in "${POD_LIST[@]}"; do cni "$TAG-n${POD_NODE[$pod]}" DEL "$pod" "/run/netns/$pod" >/dev/null; done
left=$(find "$WORK"/*/data -type f -name '10.*' | wc -l)
echo "reservations left after DEL: $left"
echo "pings answered: $good/$total"
[ "$good" = "$total" ] && [ "$left" = 0 ] && echo "demo OK" || { echo "demo FAILED"; exit 1; }
