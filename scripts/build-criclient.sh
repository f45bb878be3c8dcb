#!/usr/bin/env bash
# Builds the CRI client (tools/criclient: kubelet's CRI calls over gRPC, for the tests, the demo
# and the benchmark) and prints its path: target/criclient/release/criclient. It is its own crate
# with its own Cargo.lock, so the plugins never gain its gRPC/HTTP2/async dependencies.
# Needs cargo and protoc (protobuf-compiler, installed by scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
command -v protoc >/dev/null || {
  echo "protoc is missing (apt-get install protobuf-compiler; scripts/install-deps.sh does)" >&2
  exit 1
}
cargo build --release --locked --quiet --manifest-path tools/criclient/Cargo.toml \
  --target-dir "$PWD/target/criclient" >&2
echo "$PWD/target/criclient/release/criclient"
