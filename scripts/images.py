"""Build the operator and trainer images from their Dockerfiles, without Docker: ``make images``.

buildah (Debian's, daemonless) builds ``operator/Dockerfile`` and ``trainer_image/Dockerfile`` as
they are, with the overlay storage driver and chroot isolation, from the Python base made here
from Debian packages (``localcluster.baseimage``), passed through the Dockerfiles' own
``PYTHON_IMAGE`` build argument (no image registry is reachable). The images are written as OCI
layout directories (gzip-compressed layers) named as the chart and the examples name them
(``deepseek-operator:<appVersion>``, ``moe-trainer:<appVersion>``) and ``import_into`` loads them
into each real node's containerd.

Packages: the Dockerfiles' ``pip install`` steps read the wheelhouse ``make setup`` fetched
(``scripts/wheelhouse.sh``: requirements.lock's wheels, PyPI's files byte for byte), mounted at
build time with a ``pip.conf`` that names it as the only source; the requirement files pin exact
versions of that closure, so the images hold what an index would have given and torch is not
downloaded a second time. The host's CA bundle is mounted too (this network's TLS goes through a
proxy with its own CA). None of these mounts stays in an image.

Disk (the trainer image is 6.2 GB uncompressed, nearly all of it one layer, the venv): buildah's
commit writes each new layer to a temporary blob first; into its own storage it then copies that
blob once more and applies it as a layer (three copies of the venv besides the two containers' at
the peak), so the final stage is committed straight into the OCI layout (``-t oci:DIR:NAME``: the
temporary blob and the layout's compressed one). No per-step layer cache: ``--layers`` commits
the build stage's 6 GB venv layer too and keeps it. The layers are gzip-compressed (about half the
size): uncompressed ones (``--disable-compression``; containerd imports them as well) import faster
(measured in docs/images.md) but put the whole layer's size back at the build's peak, in the cache
and in each node's transient copy while it imports, past the disk budget; a node decompresses with
igzip (``make node-deps``) where installed. The layout directory is streamed to containerd as a tar
(an ``oci-archive:`` would be written twice: a temporary layout, then the tar), which discards the
layer blobs once unpacked; all nodes import at once. The builder's storage (base image, leftovers)
is emptied after each build.

Cache: an image whose key (the Dockerfile, every file its COPY steps read, the build arguments, the
base's key, the storage format) is unchanged is not rebuilt at all; a changed one is rebuilt from
the local wheelhouse (no download).

The trainer is built as ``VARIANT=cuda`` (PyPI's torch with its CUDA wheels): the PyTorch CPU index
``VARIANT=cpu`` needs is not reachable here.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import baseimage, realnodes
from localcluster.state import StateDir, cache_root

ROOT = Path(__file__).resolve().parents[1]
Progress = Callable[[str], None]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: How images are stored: part of every image's key, so an image kept in another format is never reused.
FORMAT = "oci-layout+gzip"
#: Where the build's RUN steps see the wheelhouse.
WHEELS_IN_BUILD = "/wheels"


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
        h = hashlib.sha256(f"{self.repository} {sorted(self.build_args.items())} {baseimage.key()} {FORMAT}".encode())
        for f in self.sources():
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
        return h.hexdigest()[:16]

    def layout(self) -> Path:
        """Where the built image is kept (an OCI layout directory)."""
        return cache_root() / "images" / f"{self.repository}-{self.key()}.oci"


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
    """Run one builder command, its output into ``log``, each line prefixed with the seconds since
    the command began (a build's log is then its profile: where the minutes of a step went)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n")
        out.flush()
        t0 = time.monotonic()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True,
                              errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(f"{time.monotonic() - t0:7.1f} {line}")
                out.flush()
        out.write(f"{time.monotonic() - t0:7.1f} ==== exit {proc.returncode}\n")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ImageBuildError(f"{' '.join(argv[:8])} ... failed ({proc.returncode}); {log}:\n{tail}")


def wheelhouse(progress: Progress) -> Path:
    """The wheelhouse of this clone's dependency environment, fetched now if setup predates it."""
    marker = ROOT / ".venv" / ".base"
    if not marker.is_file():
        raise ImageBuildError("no .venv/.base: run `make setup` first")
    deps = Path(marker.read_text().strip())
    wheels = deps.with_name(deps.name.replace("deps-", "wheels-", 1))
    if not (wheels / ".complete").is_file():
        progress(f"fetching the wheels of requirements.lock into {wheels} (once)...")
        res = subprocess.run([str(ROOT / "scripts" / "wheelhouse.sh"), str(deps / "bin" / "python"), str(wheels)],
                             cwd=ROOT, check=False)
        if res.returncode != 0:
            raise ImageBuildError(f"scripts/wheelhouse.sh failed ({res.returncode}): no wheelhouse at {wheels}")
    return wheels


def _build_mounts(wheels: Path) -> list[str]:
    """Build-time only: the wheelhouse as pip's only source, and the host's CA bundle."""
    conf = cache_root() / "images" / "build-pip.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[global]", "no-index = true", f"find-links = {WHEELS_IN_BUILD}"]
    mounts = ["-v", f"{conf}:/etc/pip.conf:ro", "-v", f"{wheels}:{WHEELS_IN_BUILD}:ro"]
    if CA_BUNDLE.is_file():
        lines.append(f"cert = {CA_BUNDLE}")
        mounts += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    conf.write_text("\n".join(lines) + "\n")
    return mounts


def _empty_storage(log: Path) -> None:
    """Remove every container and image of the builder's storage (the layout is the cache)."""
    _run(_buildah("rm", "--all"), log)
    _run(_buildah("rmi", "--all", "--force"), log)


def build(which: str, progress: Progress) -> Path:
    """Build one image (``operator`` or ``trainer``) unless cached; return its OCI layout."""
    image = IMAGES[which]
    out = image.layout()
    if (out / "index.json").is_file():
        return out
    if shutil.which("buildah") is None:
        raise ImageBuildError("building images needs buildah (Debian package buildah; `make node-deps`)")
    log = cache_root() / "images" / "logs" / f"{image.repository}.log"
    wheels = wheelhouse(progress)
    base = baseimage.archive(progress)
    t0 = time.monotonic()
    _run(_buildah("pull", "-q", f"oci-archive:{base}"), log)
    progress(f"building {image.name} from {image.dockerfile} with buildah (log: {log})...")
    args = [a for k, v in image.build_args.items() for a in ("--build-arg", f"{k}={v}")]
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(_buildah("bud", "--isolation", "chroot", "--pull-never", "--disable-compression=false",
                  *_build_mounts(wheels), "--build-arg", f"PYTHON_IMAGE={baseimage.NAME}", *args,
                  "-f", image.dockerfile, "-t", f"oci:{tmp}:{image.name}", "."), log)
    t1 = time.monotonic()
    _empty_storage(log)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    for old in out.parent.glob(f"{image.repository}-*"):
        if old != out:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    progress(f"built {image.name} in {time.monotonic() - t0:.0f} s (build and commit {t1 - t0:.0f} s): {out} "
             f"({size / 1e6:.0f} MB)")
    return out


def build_all(progress: Progress, which: tuple[str, ...] = tuple(IMAGES)) -> dict[str, Path]:
    """Build (or find) every image; return ``which -> OCI layout``."""
    return {w: build(w, progress) for w in which}


def import_into(sd: StateDir, archives: dict[str, Path], progress: Progress) -> None:
    """Import the images (OCI layouts or archives) into every running real node's containerd, the
    nodes at once (each node's containerd unpacks its own copy; together they finish sooner than
    one after the other)."""
    from localcluster import nodes

    def one(node: str) -> None:
        t0 = time.monotonic()
        for archive in archives.values():
            realnodes.import_image(sd, node, archive)
        progress(f"imported {', '.join(IMAGES[w].name for w in archives)} into {node} in "
                 f"{time.monotonic() - t0:.0f} s")

    real = [r.name for r in nodes.records(sd) if r.kind == "real" and nodes.agent_alive(sd, r.name)]
    with ThreadPoolExecutor(max_workers=max(1, len(real))) as pool:
        for done in [pool.submit(one, node) for node in real]:
            done.result()


def _progress(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.images [operator|trainer ...] [--state DIR] [--skip-without-real-nodes]``:
    build, and import into the real nodes of the cluster in DIR when given."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("which", nargs="*", help=f"images to build (default: all of {', '.join(IMAGES)})")
    p.add_argument("--state", type=Path, default=None, help="import into this cluster's real nodes")
    p.add_argument("--skip-without-real-nodes", action="store_true",
                   help="build nothing (exit 0) where real nodes cannot run, the images' only use here; "
                        "the image tests then skip, or fail under CI=true, naming the reason (make test)")
    args = p.parse_args(argv)
    unknown = [w for w in args.which if w not in IMAGES]
    if unknown:
        p.error(f"unknown image {', '.join(unknown)}; choose from {', '.join(IMAGES)}")
    if args.skip_without_real_nodes and (why := realnodes.prerequisites()) is not None:
        if os.environ.get("CI", "").lower() == "true":
            print(f"images: error: {why} (CI=true: the image tests must run)", file=sys.stderr)
            return 1
        print(f"images: not built: {why}; the image tests skip", file=sys.stderr)
        return 0
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
