#!/usr/bin/env bash
# Release binaries for a node: statically linked (glibc static-pie), so each exec skips the
# dynamic loader. A CNI plugin is a process per pod operation and ADD execs two of them, so
# this is ~0.25 ms per process (see the README's benchmark). Output: dist/azure-vnet,
# dist/azure-vnet-ipam.
#
# (A static target feature cannot go in .cargo/config.toml for the host triple: it would also
# apply to proc-macro crates, which must be dynamic. An explicit --target keeps them apart.)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --quiet --bins --target "$host"
mkdir -p dist
for b in azure-vnet azure-vnet-ipam; do
  install -m 0755 "target/$host/release/$b" "dist/$b"
done
