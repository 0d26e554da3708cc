"""A Python 3.11 base image made here from Debian packages (no image registry is reachable).

``mmdebstrap`` installs Debian bookworm's ``python3.11`` (3.11.2), its ``venv`` module (the
Dockerfiles' first step is ``python -m venv``), ``python`` as a name for it, ``passwd``
(``groupadd``/``useradd``), the CA certificates and ``libstdc++6`` (torch's wheels load it from the
system, and the official slim base has it through apt; without it ``import torch`` fails with
``libstdc++.so.6: cannot open shared object file``) into a root file system tar, from the Debian
mirror apt already uses on this machine. The tar is the image's one layer. Cached by a hash of
everything that decides its content, so a second call costs a stat.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from localcluster import ociimage
from localcluster.state import cache_root

Progress = Callable[[str], None]
SUITE = "bookworm"
PACKAGES = ("python3.11", "python3.11-venv", "python-is-python3", "passwd", "ca-certificates", "libstdc++6")
#: The name the base is imported under (in a node's containerd and in the image builder).
NAME = "localcluster.dev/python:3.11-bookworm"
#: Bump when the recipe changes in a way the key does not see.
REVISION = 1
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


class BaseImageError(RuntimeError):
    """The base could not be made (no mmdebstrap, no mirror)."""


def mirror() -> str:
    """The Debian mirror apt uses here (its first ``deb`` source for the main archive)."""
    for path in SOURCES:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.MULTILINE):
            if "security" not in m.group(1):
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.MULTILINE):
            if "security" not in m.group(1):
                return m.group(1)
    raise BaseImageError(f"no Debian mirror found in {', '.join(map(str, SOURCES))}")


def _dir() -> Path:
    return cache_root() / "images"


def key() -> str:
    """The cache key: suite, packages, mirror and recipe revision."""
    text = f"{SUITE} {' '.join(PACKAGES)} {mirror()} r{REVISION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs(progress: Progress) -> Path:
    """The base's root file system tar, made once (about 20 s and 190 MB)."""
    out = _dir() / f"python-base-{key()}.tar"
    if out.is_file():
        return out
    if shutil.which("mmdebstrap") is None:
        raise BaseImageError("the base image needs mmdebstrap (Debian package mmdebstrap; `make node-deps`)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    progress(f"making the Python base from Debian {SUITE} packages ({', '.join(PACKAGES)}) with mmdebstrap...")
    res = subprocess.run(["mmdebstrap", "--quiet", "--variant=essential", f"--include={','.join(PACKAGES)}",
                          "--mode=root", "--format=tar", SUITE, str(tmp), f"deb {mirror()} {SUITE} main"],
                         capture_output=True, text=True, check=False, timeout=1800)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BaseImageError(f"mmdebstrap failed: {res.stderr.strip()[-2000:]}")
    tmp.replace(out)
    return out


def archive(progress: Progress) -> Path:
    """The base as an OCI archive named ``NAME`` (for ``ctr images import`` and the builder)."""
    fs = rootfs(progress)
    out = fs.with_name(fs.name.removesuffix(".tar") + ".oci.tar")
    if not out.is_file():
        ociimage.write_archive([fs], ociimage.ImageConfig(cmd=["python3"]), NAME, out)
    return out
