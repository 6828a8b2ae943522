#!/usr/bin/python3
"""Builds the tiny local container images the runtime suites use (no registry is reachable).

The image is Debian's busybox-static in an otherwise empty root file system, plus a page for
`httpd` at /www/index.html ("twill pod\n").

  images.py rootfs OUT.tar               a root file system tarball, for `podman import`
  images.py oci OUT.tar NAME CMD...      an OCI image archive named NAME (e.g.
                                         localhost/twill-pause:1) whose default command is CMD,
                                         for `ctr images import`

Only the Python standard library is used; the output is deterministic (fixed mtimes, owners).
"""
import hashlib
import io
import json
import os
import sys
import tarfile

BUSYBOX = os.environ.get("TWILL_BUSYBOX", "/bin/busybox")
APPLETS = ["sh", "ip", "wget", "httpd", "nc", "sleep", "cat", "ping", "echo", "hostname",
           "ls", "sysctl", "true"]
PAGE = b"twill pod\n"


def _add(tar, name, kind, data=b"", mode=0o755, target=""):
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.mode = mode
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = target
        tar.addfile(info)
    elif kind == tarfile.DIRTYPE:
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def rootfs_bytes():
    """The root file system as an uncompressed tar."""
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "dev", "etc", "proc", "run", "sys", "tmp", "www"]:
            _add(tar, d, tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", tarfile.REGTYPE, busybox)
        for applet in APPLETS:
            _add(tar, "bin/" + applet, tarfile.SYMTYPE, target="busybox")
        _add(tar, "etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/:/bin/sh\n", 0o644)
        _add(tar, "etc/group", tarfile.REGTYPE, b"root:x:0:\n", 0o644)
        _add(tar, "www/index.html", tarfile.REGTYPE, PAGE, 0o644)
    return buf.getvalue()


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_archive(name, cmd):
    """An OCI image layout (as a tar) holding one image `name` with default command `cmd`."""
    layer = rootfs_bytes()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _digest(manifest), "size": len(manifest),
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag},
        }],
    }, sort_keys=True).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", tarfile.REGTYPE, b'{"imageLayoutVersion":"1.0.0"}', 0o644)
        _add(tar, "index.json", tarfile.REGTYPE, index, 0o644)
        _add(tar, "blobs", tarfile.DIRTYPE)
        _add(tar, "blobs/sha256", tarfile.DIRTYPE)
        for blob in (layer, config, manifest):
            _add(tar, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), tarfile.REGTYPE,
                 blob, 0o644)
    return buf.getvalue()


def main(argv):
    if len(argv) >= 2 and argv[0] == "rootfs":
        data = rootfs_bytes()
    elif len(argv) >= 4 and argv[0] == "oci":
        data = oci_archive(argv[2], argv[3:])
    else:
        sys.exit(__doc__)
    tmp = argv[1] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
