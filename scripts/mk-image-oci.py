#!/usr/bin/env python3
"""The node installer's OCI image archive, built offline and deterministically (scripts/build-image.sh
calls it): one layer holding the static executable as /azure-vnet and the default conflist as
/10-azure.conflist, nothing else (no shell, no libc, no package manager), and a config whose
entrypoint is the install a DaemonSet's init container runs.

Usage: mk-image-oci.py --binary FILE --conflist FILE --version V --tag REF --out FILE
                       [--revision REV] [--source URL]
Then:  ctr -n k8s.io images import FILE     (or skopeo copy oci-archive:FILE docker://...)

The same inputs give the same bytes: every timestamp is 0, owners are 0:0, JSON keys sorted.
A binary that is not static (it has an ELF interpreter) is refused: the image has no libc.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import struct
import sys
import tarfile

ENTRYPOINT = ["/azure-vnet", "install", "--host-root", "/host", "--conflist", "/10-azure.conflist"]
EPOCH = "1970-01-01T00:00:00Z"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def die(msg):
    print(f"mk-image-oci.py: {msg}", file=sys.stderr)
    sys.exit(1)


def check_static(path, data):
    """An ELF executable with no PT_INTERP program header (no dynamic loader needed)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        die(f"{path}: not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            die(f"{path}: dynamically linked (it names an ELF interpreter); build it with "
                "scripts/build-release.sh, the image has no libc")


def layer(binary, conflist):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data, mode in [("azure-vnet", binary, 0o755), ("10-azure.conflist", conflist, 0o644)]:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def dumps(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--conflist", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--tag", required=True, help="the image reference, e.g. localhost/azure-vnet-cni:v0.1.0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--revision", default="")
    ap.add_argument("--source", default="")
    a = ap.parse_args()

    binary = open(a.binary, "rb").read()
    check_static(a.binary, binary)
    conflist = open(a.conflist, "rb").read()
    try:
        json.loads(conflist)
    except ValueError as e:
        die(f"{a.conflist}: not JSON: {e}")

    raw = layer(binary, conflist)
    gz = gzip.compress(raw, compresslevel=9, mtime=0)
    labels = {
        "org.opencontainers.image.title": "azure-vnet-cni",
        "org.opencontainers.image.description":
            "Azure CNI (transparent mode) in Rust: the node installer (azure-vnet install)",
        "org.opencontainers.image.version": a.version,
        "org.opencontainers.image.licenses": "MIT",
    }
    if a.revision:
        labels["org.opencontainers.image.revision"] = a.revision
    if a.source:
        labels["org.opencontainers.image.source"] = a.source
    arch = ARCH.get(platform.machine(), platform.machine())
    config = dumps({
        "created": EPOCH,
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ENTRYPOINT, "WorkingDir": "/", "User": "0:0", "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [sha(raw)]},
        "history": [{"created": EPOCH, "created_by": "scripts/build-image.sh"}],
    })
    manifest = dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(gz), "size": len(gz)}],
        "annotations": labels,
    })
    index = dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(manifest), "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": a.tag,
                            "org.opencontainers.image.ref.name": a.tag.rsplit(":", 1)[-1]},
        }],
    })
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as t:
        def add(name, b, mode=0o644, kind=tarfile.REGTYPE):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = kind, mode, 0, 0, 0, "", ""
            if kind == tarfile.REGTYPE:
                ti.size = len(b)
                t.addfile(ti, io.BytesIO(b))
            else:
                t.addfile(ti)
        add("oci-layout", dumps({"imageLayoutVersion": "1.0.0"}))
        add("index.json", index)
        add("blobs", None, 0o755, tarfile.DIRTYPE)
        add("blobs/sha256", None, 0o755, tarfile.DIRTYPE)
        for b in (config, manifest, gz):
            add("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
    os.replace(tmp, a.out)
    print(f"{a.out}: {a.tag} (manifest {sha(manifest)}, layer {len(gz)} bytes)")


if __name__ == "__main__":
    main()
