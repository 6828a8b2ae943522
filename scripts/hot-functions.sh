#!/bin/bash
# Writes scripts/hot-functions.order: the functions the plugins run when a runtime calls them,
# steady-state ADD first, for the linker to lay out side by side (`make build` links through
# scripts/link-ordered.sh, which hands them to lld's --symbol-ordering-file). A call's peak RSS is mostly its text, and the kernel maps 64 KiB
# of file pages around every page fault: code spread over the whole binary maps nearly all of
# it, code laid out together maps a third. Run as root: `make hot-functions` (also rebuilds).
#
# How: an unstripped release build (target/hot-text; the symbol names are the ones `make build`
# links), each call single-stepped under `twill-hot-text trace` in namespaces this script makes
# and removes (never the root namespace), the addresses mapped to functions with `nm`. A stale
# file costs only locality: the linker skips names it does not find.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TRIPLE=$(sh scripts/release-target.sh)
TRIPLE_ENV=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')
export CARGO_TARGET_DIR=$ROOT/target/hot-text CARGO_PROFILE_RELEASE_STRIP=false
env "CARGO_TARGET_${TRIPLE_ENV}_RUSTFLAGS=-C target-feature=+crt-static -C relocation-model=static -C symbol-mangling-version=v0" \
  cargo build --release --target "$TRIPLE" --bin bridge-host-gw --bin routed-veth \
  --bin host-local --bin twill-bare-add --bin twill-hot-text
B=$CARGO_TARGET_DIR/$TRIPLE/release
STEP=$B/twill-hot-text

W=$(mktemp -d /tmp/twill-hot.XXXXXX)
N=twhot$$n; P=twhot$$p; PODS=(b0 b1 b2 r0 r1 h0 x0 x1)
cleanup() {
  for p in "${PODS[@]}"; do ip netns del "$P$p" 2>/dev/null || true; done
  ip netns del "$N" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$N"
ip -n "$N" link set lo up
for p in "${PODS[@]}"; do ip netns add "$P$p"; done

printf 'FLANNEL_NETWORK=10.77.0.0/16\nFLANNEL_SUBNET=10.77.1.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n' \
  > "$W/subnet.env"
# conf TYPE VERSION EXTRA-KEYS IPAM-SUBNET: a network config on stdout.
conf() {
  printf '{"cniVersion":"%s","name":"hot","type":"%s",%s"runDir":"%s/run-%s",' "$2" "$1" "$3" "$W" "$1"
  printf '"ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}],' "$4"
  printf '"dataDir":"%s/ipam-%s"}}' "$W" "$1"
}
BR='"bridge":"twhot0","subnetFile":"'$W'/subnet.env","peers":[],'
conf bridge-host-gw 1.0.0 "$BR\"ipMasq\":false," 10.77.1.0/24 > "$W/bridge"
conf bridge-host-gw 1.0.0 "$BR\"ipMasq\":true," 10.77.1.0/24 > "$W/bridge-masq"
conf bridge-host-gw 1.1.0 "$BR\"ipMasq\":false," 10.77.1.0/24 > "$W/bridge-1.1"
conf routed-veth 1.0.0 '"peers":[],' 10.78.0.0/24 > "$W/routed"
printf '{"cniVersion":"1.0.0","name":"hot","type":"host-local","ranges":[[{"subnet":"10.79.0.0/24"}]],"dataDir":"%s/ipam-hl"}' \
  "$W" > "$W/hl-ipam"
printf '{"cniVersion":"1.0.0","name":"hot","type":"hl","ipam":%s}' "$(cat "$W/hl-ipam")" > "$W/host-local"

# call TAG PLUGIN COMMAND CONTAINER POD CONFIG: one single-stepped call, its result in $W/TAG.json.
call() {
  local netns=/run/netns/$P$5
  CNI_COMMAND=$3 CNI_CONTAINERID=$4 CNI_NETNS=$netns CNI_IFNAME=eth0 CNI_PATH=$B \
    ip netns exec "$N" "$STEP" trace "$W/$1" "$B/$2" < "$6" > "$W/$1.json" || true
  echo "$1: $(tr -d ' \n' < "$W/$1.json" | head -c 100)"
}
# with_prev CONFIG RESULT: CONFIG with RESULT as its prevResult.
with_prev() { sed 's/}$//' "$1"; printf ',"prevResult":%s}' "$(cat "$2")"; }

call b-add-first bridge-host-gw ADD hot-b0 b0 "$W/bridge"
call b-add bridge-host-gw ADD hot-b1 b1 "$W/bridge"
call b-del bridge-host-gw DEL hot-b1 b1 "$W/bridge"
with_prev "$W/bridge" "$W/b-add-first.json" > "$W/bridge-prev"
call b-check bridge-host-gw CHECK hot-b0 b0 "$W/bridge-prev"
call b-status bridge-host-gw STATUS "" b0 "$W/bridge-1.1"
call b-add-masq bridge-host-gw ADD hot-b2 b2 "$W/bridge-masq"
call b-del-masq bridge-host-gw DEL hot-b2 b2 "$W/bridge-masq"
call b-version bridge-host-gw VERSION "" b0 "$W/bridge"
call b-error bridge-host-gw ADD ../hot b1 "$W/bridge"
call r-add-first routed-veth ADD hot-r0 r0 "$W/routed"
call r-add routed-veth ADD hot-r1 r1 "$W/routed"
call r-del routed-veth DEL hot-r1 r1 "$W/routed"
with_prev "$W/routed" "$W/r-add-first.json" > "$W/routed-prev"
call r-check routed-veth CHECK hot-r0 r0 "$W/routed-prev"
call r-version routed-veth VERSION "" r0 "$W/routed"
call h-add host-local ADD hot-h0 h0 "$W/host-local"
call h-del host-local DEL hot-h0 h0 "$W/host-local"
call h-version host-local VERSION "" h0 "$W/host-local"
bridge_index=$(ip -n "$N" -o link show twhot0 | cut -d: -f1)
for i in bridge routed; do
  if [ $i = bridge ]; then args=(bridge /run/netns/${P}x0 twhotx0 "$bridge_index" 10.77.1.200/24 10.77.1.1)
  else args=(routed /run/netns/${P}x1 twhotx1 10.78.0.200); fi
  ip netns exec "$N" "$STEP" trace "$W/bare-$i" "$B/twill-bare-add" "${args[@]}"
done
call b-del-first bridge-host-gw DEL hot-b0 b0 "$W/bridge"
call r-del-first routed-veth DEL hot-r0 r0 "$W/routed"

# The order: every plugin's steady-state ADD, the floor's, the DELs, then the rarer calls.
pairs=()
for t in b-add:bridge-host-gw r-add:routed-veth h-add:host-local bare-bridge:twill-bare-add \
  bare-routed:twill-bare-add b-del:bridge-host-gw r-del:routed-veth h-del:host-local \
  b-add-first:bridge-host-gw r-add-first:routed-veth b-check:bridge-host-gw \
  r-check:routed-veth b-add-masq:bridge-host-gw b-del-masq:bridge-host-gw \
  b-status:bridge-host-gw b-version:bridge-host-gw r-version:routed-veth \
  h-version:host-local b-error:bridge-host-gw b-del-first:bridge-host-gw \
  r-del-first:routed-veth; do
  pairs+=("$B/${t#*:}" "$W/${t%%:*}")
done
# Names as the demangler prints them without crate hashes, which follow the build's features and
# profile (scripts/link-ordered.sh finds this link's symbols for them); each name once.
"$STEP" order "${pairs[@]}" | c++filt | sed 's/\[[0-9a-f]*\]//g' | awk '!seen[$0]++' \
  > "$ROOT/scripts/hot-functions.order"
echo "scripts/hot-functions.order: $(wc -l < "$ROOT/scripts/hot-functions.order") functions"
