#!/usr/bin/env bash
# The node installer's container image, built offline: an OCI image archive holding the static
# release executable as /azure-vnet and the default conflist (conflist/10-azure.conflist) as
# /10-azure.conflist, nothing else (no shell, no libc, no package manager). Its entrypoint is
# what the DaemonSet's init container runs (deploy/azure-vnet-cni.yaml):
#   /azure-vnet install --host-root /host --conflist /10-azure.conflist
# with the node's /opt/cni/bin and /etc/cni/net.d mounted at /host/opt/cni/bin and
# /host/etc/cni/net.d. Deterministic: the same source gives the same bytes.
#
#   scripts/build-image.sh [--out FILE] [--tag REF]
#     --out  default dist/azure-vnet-cni-<version>.oci.tar
#     --tag  default localhost/azure-vnet-cni:<version>
#   AZURE_VNET_VERSION=v1.2.3 scripts/build-image.sh     # a build with its own version
#
# Then: ctr -n k8s.io images import FILE, or skopeo copy oci-archive:FILE docker://REGISTRY/...
# Prints the archive's path on the last line.
set -euo pipefail
out= tag=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$(realpath -m -- "${2:?--out needs a file}"); shift 2 ;;
    --tag) tag=${2:?--tag needs a reference}; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "build-image.sh: unexpected argument $1 (--help: usage)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
scripts/build-release.sh
version=$(dist/azure-vnet -v | sed -n 's/^Azure CNI Version //p')
[ -n "$version" ] || { echo "build-image.sh: dist/azure-vnet -v printed no version" >&2; exit 1; }
: "${out:=$PWD/dist/azure-vnet-cni-$version.oci.tar}"
: "${tag:=localhost/azure-vnet-cni:$version}"
revision= source=
if git rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git rev-parse HEAD)
  git diff --quiet HEAD -- 2>/dev/null || revision="$revision-dirty"
  source=$(git config --get remote.origin.url || true)
fi
mkdir -p "$(dirname "$out")"
python3 scripts/mk-image-oci.py --binary dist/azure-vnet --conflist conflist/10-azure.conflist \
  --version "$version" --tag "$tag" --out "$out" --revision "$revision" --source "$source" >&2
echo "$out"
