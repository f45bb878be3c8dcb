#!/usr/bin/env bash
# The benchmark: azure-vnet + azure-vnet-ipam against Debian's ptp + host-local, in one run, in a
# throwaway testbed (see benches/plugins.rs for what is measured and how).
#
#   sudo scripts/bench.sh [--pods 250] [--bursts 3] [--floor 100] [--out FILE]
#
# Prints a table (with ratios to the reference and the targets) and writes the same figures as
# JSON (default target/bench/results.json). Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh must run as root (network namespaces)" >&2; exit 1; }
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
scripts/build-release.sh
cargo bench --quiet --features internals --bench plugins -- --bin-dir "$PWD/dist" "$@"
