"""Build the operator and trainer images from their Dockerfiles, without Docker: ``make images``.

buildah (Debian's, daemonless) builds ``operator/Dockerfile`` and ``trainer_image/Dockerfile`` as
they are, with the overlay storage driver and chroot isolation, from the Python base made here
from Debian packages (``localcluster.baseimage``), passed through the Dockerfiles' own
``PYTHON_IMAGE`` build argument (no image registry is reachable). The images are written as
docker archives named as the chart and the examples name them (``deepseek-operator:<appVersion>``,
``moe-trainer:<appVersion>``) and ``import_into`` loads them into each real node's containerd.

Cache: an image whose key (the Dockerfile, every file its COPY steps read, the build arguments,
the base's key) is unchanged is not rebuilt at all; a changed one is rebuilt with buildah's layer
cache (``--layers``), so the dependency layer (keyed by the requirement files it copies) is reused
when only sources changed. Build-time only, the host's CA bundle and a ``pip.conf`` naming it are
mounted into RUN steps (this network's TLS goes through a proxy with its own CA); nothing of them
stays in an image.

The trainer is built as ``VARIANT=cuda`` (PyPI's torch with its CUDA wheels): the PyTorch CPU index
``VARIANT=cpu`` needs is not reachable here.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import baseimage
from localcluster.state import StateDir, cache_root

ROOT = Path(__file__).resolve().parents[1]
Progress = Callable[[str], None]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageBuildError(RuntimeError):
    """An image could not be built (no buildah, a failed step: the message has its log's tail)."""


def app_version() -> str:
    """The chart's appVersion: the tag the chart and the examples use."""
    m = re.search(r'^appVersion:\s*"?([^"\s]+)"?', (ROOT / "charts/deepseek-operator/Chart.yaml").read_text(),
                  re.MULTILINE)
    if m is None:
        raise ImageBuildError("charts/deepseek-operator/Chart.yaml has no appVersion")
    return m.group(1)


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, repository name and build arguments."""

    dockerfile: str
    repository: str
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The full reference a node resolves ``<repository>:<appVersion>`` to."""
        return f"docker.io/library/{self.repository}:{app_version()}"

    def sources(self) -> list[Path]:
        """The Dockerfile and every file its COPY steps read from the build context."""
        text = re.sub(r"\\\n", " ", (ROOT / self.dockerfile).read_text())
        files = [ROOT / self.dockerfile]
        for line in text.splitlines():
            parts = line.split()
            if not parts or parts[0].upper() != "COPY" or any(p.startswith("--from") for p in parts):
                continue
            for src in parts[1:-1]:
                path = ROOT / src
                files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
                    if path.is_dir() else [path]
        return files

    def key(self) -> str:
        """Hash of everything the image is made of."""
        h = hashlib.sha256(f"{self.repository} {sorted(self.build_args.items())} {baseimage.key()}".encode())
        for f in self.sources():
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
        return h.hexdigest()[:16]

    def archive(self) -> Path:
        """Where the built image is kept (a docker archive)."""
        return cache_root() / "images" / f"{self.repository}-{self.key()}.tar"


IMAGES = {
    "operator": Image("operator/Dockerfile", "deepseek-operator"),
    "trainer": Image("trainer_image/Dockerfile", "moe-trainer", {"VARIANT": "cuda"}),
}


def _storage() -> Path:
    return cache_root() / "images" / "buildah"


def _buildah(*args: str) -> list[str]:
    s = _storage()
    return ["buildah", "--root", str(s / "storage"), "--runroot", str(s / "run"), "--storage-driver", "overlay",
            *args]


def _run(argv: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n")
        out.flush()
        res = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ImageBuildError(f"{' '.join(argv[:8])} ... failed ({res.returncode}); {log}:\n{tail}")


def _build_mounts() -> list[str]:
    """Build-time only: the host's CA bundle and a pip.conf naming it (TLS through a proxy's CA)."""
    if not CA_BUNDLE.is_file():
        return []
    conf = cache_root() / "images" / "build-pip.conf"
    conf.write_text(f"[global]\ncert = {CA_BUNDLE}\n")
    return ["-v", f"{conf}:/etc/pip.conf:ro", "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]


def build(which: str, progress: Progress) -> Path:
    """Build one image (``operator`` or ``trainer``) unless cached; return its docker archive."""
    image = IMAGES[which]
    out = image.archive()
    if out.is_file():
        return out
    if shutil.which("buildah") is None:
        raise ImageBuildError("building images needs buildah (Debian package buildah; `make node-deps`)")
    log = cache_root() / "images" / "logs" / f"{image.repository}.log"
    base = baseimage.archive(progress)
    t0 = time.monotonic()
    _run(_buildah("pull", "-q", f"oci-archive:{base}"), log)
    progress(f"building {image.name} from {image.dockerfile} with buildah (log: {log})...")
    args = [a for k, v in image.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    _run(_buildah("bud", "--isolation", "chroot", "--pull-never", "--layers", *_build_mounts(),
                  "--build-arg", f"PYTHON_IMAGE={baseimage.NAME}", *args, "-f", image.dockerfile,
                  "-t", image.name, "."), log)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    _run(_buildah("push", "-q", image.name, f"docker-archive:{tmp}:{image.name}"), log)
    tmp.replace(out)
    for old in out.parent.glob(f"{image.repository}-*.tar"):
        if old != out:
            old.unlink()
    progress(f"built {image.name} in {time.monotonic() - t0:.0f} s: {out} ({out.stat().st_size / 1e6:.0f} MB)")
    return out


def build_all(progress: Progress, which: tuple[str, ...] = tuple(IMAGES)) -> dict[str, Path]:
    """Build (or find) every image; return ``which -> archive``."""
    return {w: build(w, progress) for w in which}


def import_into(sd: StateDir, archives: dict[str, Path], progress: Progress) -> None:
    """Import the images into every running real node's containerd (a second import is cheap)."""
    from localcluster import nodes, realnodes

    for r in nodes.records(sd):
        if r.kind == "real" and nodes.agent_alive(sd, r.name):
            for archive in archives.values():
                realnodes.import_image(sd, r.name, archive)
            progress(f"imported {', '.join(IMAGES[w].name for w in archives)} into {r.name}")


def _progress(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.images [operator|trainer ...] [--state DIR]``: build, and import into
    the real nodes of the cluster in DIR when given."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("which", nargs="*", help=f"images to build (default: all of {', '.join(IMAGES)})")
    p.add_argument("--state", type=Path, default=None, help="import into this cluster's real nodes")
    args = p.parse_args(argv)
    unknown = [w for w in args.which if w not in IMAGES]
    if unknown:
        p.error(f"unknown image {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    try:
        archives = build_all(_progress, tuple(args.which or IMAGES))
        for w, a in archives.items():
            print(f"{IMAGES[w].name} {a}")
        if args.state:
            import_into(StateDir(args.state.absolute()), archives, _progress)
    except (ImageBuildError, baseimage.BaseImageError) as e:
        print(f"images: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
