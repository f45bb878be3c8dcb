#!/usr/bin/env python3
"""An OCI image archive holding one static /pause binary (its entrypoint), built offline: the
sandbox image of the CRI tests (no registry is reachable).

Usage: mk-pause-oci.py PAUSE_BINARY OUT.tar [IMAGE_REF]   (IMAGE_REF default localhost/pause:azvt)
Then:  ctr -n k8s.io -a SOCK images import OUT.tar
"""
import gzip, hashlib, io, json, sys, tarfile


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def main():
    binp, out = sys.argv[1], sys.argv[2]
    ref = sys.argv[3] if len(sys.argv) > 3 else "localhost/pause:azvt"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["dev", "proc", "sys", "etc"]:
            ti = tarfile.TarInfo(d); ti.type = tarfile.DIRTYPE; ti.mode = 0o755
            t.addfile(ti)
        data = open(binp, "rb").read()
        ti = tarfile.TarInfo("pause"); ti.size = len(data); ti.mode = 0o755
        t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    gz = gzip.compress(raw, mtime=0)
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"},
                      "rootfs": {"type": "layers", "diff_ids": [sha(raw)]}}, sort_keys=True).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": sha(cfg), "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "digest": sha(gz), "size": len(gz)}]}, sort_keys=True).encode()
    idx = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(man),
        "size": len(man), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}}]},
        sort_keys=True).encode()
    with tarfile.open(out, "w") as t:
        def add(n, b):
            ti = tarfile.TarInfo(n); ti.size = len(b); ti.mode = 0o644
            t.addfile(ti, io.BytesIO(b))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", idx)
        for b in (cfg, man, gz):
            add("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
    print(f"wrote {out}: {ref} {sha(man)}")


if __name__ == "__main__":
    main()
