#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then formatting, lints,
# unit tests and the root-only integration tests (network namespaces, real cnitool, real
# plugins, real containerd with its CRI plugin driven as kubelet does, real podman). Must run
# as root: the integration tests fail, never skip, without it.
#
#   sudo scripts/test.sh            # everything
#   sudo scripts/test.sh <filter>   # only tests whose name contains <filter>
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root (the integration tests create network namespaces)" >&2
  exit 1
fi
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# the benchmark and the fuzz-facing internals build only with the `internals` feature
cargo clippy --all-targets --features internals --quiet -- -D warnings
# The CRI client (its own crate: the plugins never link gRPC); the CRI tests call it.
cargo fmt --check --manifest-path tools/criclient/Cargo.toml
cargo clippy --quiet --locked --manifest-path tools/criclient/Cargo.toml \
  --target-dir target/criclient -- -D warnings
scripts/build-criclient.sh >/dev/null
cargo build --quiet --bins
cargo test --quiet "$@"
