#!/usr/bin/env bash
# Everything the tests and the demo need on a fresh Debian 12 machine, installed idempotently:
#   - Debian's CNI reference plugins (ptp, host-local, portmap, bandwidth) in /usr/lib/cni
#   - the real upstream `cnitool` (containernetworking/cni v1.1.2), built offline from Debian's
#     *source* package (Debian's binary package leaves it out) into /usr/local/bin/cnitool
#   - containerd 1.6 + runc (the containerd and CRI end-to-end tests), busybox-static (pod servers)
#   - gcc + libc6-dev (the CRI tests' pause binary is linked statically), protobuf-compiler (the
#     CRI client tools/criclient, built by scripts/build-criclient.sh)
#   - podman 4.3 (its CNI backend: tests/podman.rs; conmon, containers-common, runc come with it;
#     no recommends: netavark, slirp4netns, fuse-overlayfs are not needed as root with vfs)
#   - iproute2, iptables, ping, curl, python3 (the fake wireserver)
#   - kubernetes-validate (PyPI, pinned; it bundles the Kubernetes API schemas, so it validates
#     deploy/*.yaml offline) in a venv of the repository's own: target/tools/venv
# The machine's apt configuration is not changed: the deb-src entry lives in a private dir.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "install-deps.sh must run as root" >&2; exit 1; }

PKGS=(containernetworking-plugins golang-go golang-github-appc-cni-dev iproute2 iptables
      iputils-ping curl xz-utils ca-certificates busybox-static python3 containerd runc
      gcc libc6-dev protobuf-compiler podman conmon util-linux mount python3-venv time)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x /usr/local/bin/cnitool ]; then
  echo "building cnitool from Debian's golang-github-appc-cni source package"
  T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # the first deb822 stanza of the machine's Debian source, as deb-src for bookworm
    awk 'BEGIN{RS=""} NR==1{print; exit}' /etc/apt/sources.list.d/debian.sources |
      sed -e 's/^Types:.*/Types: deb-src/' -e 's/^Suites:.*/Suites: bookworm/' > "$T/src.sources"
    LIST=(-o Dir::Etc::sourceparts="$T" -o Dir::Etc::sourcelist=/dev/null)
  else
    grep -m1 -E '^deb ' /etc/apt/sources.list | sed -e 's/^deb /deb-src /' > "$T/src.list"
    LIST=(-o Dir::Etc::sourcelist="$T/src.list" -o Dir::Etc::sourceparts=-)
  fi
  mkdir -p "$T/lists/partial"
  APTSRC=("${LIST[@]}" -o Dir::State::lists="$T/lists")
  apt-get "${APTSRC[@]}" update -qq
  (cd "$T" && apt-get "${APTSRC[@]}" source --download-only -qq golang-github-appc-cni 2>/dev/null)
  tar -C "$T" -xJf "$T"/golang-github-appc-cni_*.orig.tar.xz --wildcards '*/cnitool/*'
  # GOPATH mode: libcni and pkg/* come from /usr/share/gocode (golang-github-appc-cni-dev)
  (cd "$T"/golang-github-appc-cni-*/cnitool &&
    GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$T/gocache" go build -o /usr/local/bin/cnitool .)
fi

if [ ! -x /usr/local/bin/promtool ]; then
  # promtool only (the metrics tests check our exposition with it): taken out of Debian's
  # prometheus package without installing the package, whose server is not wanted here.
  echo "extracting promtool from Debian's prometheus package"
  P=$(mktemp -d)
  (cd "$P" && apt-get download -qq prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download -qq prometheus; })
  dpkg-deb -x "$P"/prometheus_*.deb "$P/x"
  install -m 0755 "$P/x/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$P"
fi

KUBERNETES_VALIDATE=1.37.0
VENV="$(cd "$(dirname "$0")/.." && pwd)/target/tools/venv"
if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE" ]; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE into $VENV"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE"
fi

for f in "$VENV/bin/kubernetes-validate" /usr/local/bin/promtool /usr/local/bin/cnitool /usr/lib/cni/ptp /usr/lib/cni/host-local /usr/lib/cni/portmap \
         /usr/lib/cni/bandwidth /usr/lib/cni/loopback /usr/bin/containerd /usr/bin/ctr \
         /usr/bin/containerd-shim-runc-v2 /bin/busybox /usr/bin/protoc /usr/bin/podman /usr/bin/conmon; do
  [ -x "$f" ] || { echo "missing after install: $f" >&2; exit 1; }
done
[ -f "$(gcc -print-file-name=libc.a)" ] || { echo "missing after install: libc.a (libc6-dev)" >&2; exit 1; }
