#!/usr/bin/env bash
# The benchmarks, in one run, in throwaway testbeds:
#  1. the plugins (benches/plugins.rs): azure-vnet + azure-vnet-ipam against Debian's ptp +
#     host-local, exec'd directly as a runtime would;
#  2. the CRI (benches/cri.rs): RunPodSandbox and StopPodSandbox + RemovePodSandbox through
#     containerd's CRI plugin, with ours, with ptp + host-local, and without a network.
#
#   sudo scripts/bench.sh [--pods 250] [--bursts 3] [--floor 100] [--out FILE]
#                         [--cri-sandboxes 50] [--cri-batch 10] [--cri-source wireserver|file]
#                         [--cri-out FILE] [--cri-only | --no-cri]
#
# Each prints a table and writes its figures as JSON: the plugins' to --out (default
# target/bench/results.json), the CRI's to --cri-out (default: --out's name with .cri.json,
# target/bench/results.cri.json). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh must run as root (network namespaces)" >&2; exit 1; }
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

PLUGINS_ARGS=() CRI_ARGS=() OUT=target/bench/results.json CRI_OUT="" PLUGINS=1 CRI=1
while [ $# -gt 0 ]; do
  case $1 in
    --cri-only) PLUGINS=0; shift ;;
    --no-cri) CRI=0; shift ;;
    --cri-out) CRI_OUT=${2:?--cri-out FILE}; shift 2 ;;
    --cri-sandboxes | --cri-batch | --cri-source)
      CRI_ARGS+=("--${1#--cri-}" "${2:?$1 needs a value}"); shift 2 ;;
    --out) OUT=${2:?--out FILE}; PLUGINS_ARGS+=(--out "$2"); shift 2 ;;
    *) PLUGINS_ARGS+=("$1"); shift ;;
  esac
done
[ -n "$CRI_OUT" ] || CRI_OUT=${OUT%.json}.cri.json

scripts/install-deps.sh
scripts/build-release.sh
if [ "$PLUGINS" = 1 ]; then
  cargo bench --quiet --features internals --bench plugins -- --bin-dir "$PWD/dist" "${PLUGINS_ARGS[@]}"
fi
if [ "$CRI" = 1 ]; then
  CRICLIENT=$(scripts/build-criclient.sh)
  # the same features as the plugins' bench: the library is built once for both
  cargo bench --quiet --features internals --bench cri -- --bin-dir "$PWD/dist" \
    --criclient "$CRICLIENT" --out "$CRI_OUT" "${CRI_ARGS[@]}"
fi
