#!/usr/bin/env bash
# The full reliability campaigns (CI runs short versions of the same tests):
#   load:   10 rounds of 250 concurrent ADDs then 250 concurrent DELs
#   faults: 500+ SIGKILLs of azure-vnet or azure-vnet-ipam at random moments of concurrent
#           ADDs and DELs, invariants checked after every round
#   a full filesystem and a read-only state directory
#
#   sudo scripts/campaigns.sh [test-name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/campaigns.sh must run as root (network namespaces)" >&2; exit 1; }
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
AZURE_VNET_CAMPAIGN=full cargo test --release --test campaigns -- --nocapture --test-threads 1 "$@"
