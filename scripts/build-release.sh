#!/usr/bin/env bash
# The release executable for a node: statically linked (glibc static-pie), so each exec skips
# the dynamic loader (a CNI plugin is a process per pod operation). Output: dist/azure-vnet and
# dist/azure-vnet-ipam, one file under two names (a hard link).
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
install -m 0755 "target/$host/release/azure-vnet" dist/azure-vnet
ln -f dist/azure-vnet dist/azure-vnet-ipam
