#!/usr/bin/env python3
"""Build a tiny OCI image archive (docker-archive-free, pure OCI layout in a tar)
from Debian's busybox-static, without any network.

Used by tests/containerd.rs (the image `ctr run --cni` starts): /bin/sh, ip, httpd, sleep, ...
and /var/www/index.html ("hello from rcbusybox").

Usage: mk-busybox-oci.py OUT.tar [IMAGE_REF]
  IMAGE_REF defaults to localhost/rcbusybox:latest
Then:  ctr -a SOCK images import OUT.tar
"""
import gzip, hashlib, io, json, os, sys, tarfile, time

BUSYBOX = "/bin/busybox"  # from package busybox-static (statically linked)
APPLETS = ["sh", "ip", "ping", "ifconfig", "route", "sleep", "cat", "ls", "echo",
           "wget", "nc", "httpd", "hostname", "ps", "mount", "true", "false", "uname"]


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_tar():
    buf = io.BytesIO()
    mtime = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def d(name, mode=0o755):
            ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = mode; ti.mtime = mtime
            t.addfile(ti)
        for n in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var", "var/www"]:
            d(n, 0o1777 if n == "tmp" else 0o755)
        data = open(BUSYBOX, "rb").read()
        ti = tarfile.TarInfo("bin/busybox"); ti.size = len(data); ti.mode = 0o755; ti.mtime = mtime
        t.addfile(ti, io.BytesIO(data))
        for a in APPLETS:
            ti = tarfile.TarInfo("bin/" + a); ti.type = tarfile.SYMTYPE; ti.linkname = "busybox"; ti.mtime = mtime
            t.addfile(ti)
        for name, content in [("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
                              ("etc/group", b"root:x:0:\n"),
                              ("var/www/index.html", b"hello from rcbusybox\n")]:
            ti = tarfile.TarInfo(name); ti.size = len(content); ti.mode = 0o644; ti.mtime = mtime
            t.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def main():
    out = sys.argv[1]
    ref = sys.argv[2] if len(sys.argv) > 2 else "localhost/rcbusybox:latest"
    raw = layer_tar()
    gz = gzip.compress(raw, mtime=0)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha(raw)]},
        "history": [{"created_by": "mk-busybox-oci.py"}],
    }
    cfg = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz), "size": len(gz)}],
    }
    man = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(man), "size": len(man),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
        }],
    }
    idx = json.dumps(index, sort_keys=True).encode()
    with tarfile.open(out, "w") as t:
        def add(name, b):
            ti = tarfile.TarInfo(name); ti.size = len(b); ti.mode = 0o644; ti.mtime = int(time.time())
            t.addfile(ti, io.BytesIO(b))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", idx)
        for b in (cfg, man, gz):
            add("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
    print(f"wrote {out}: {ref} manifest {sha(man)} layer {len(gz)} bytes")


if __name__ == "__main__":
    main()
