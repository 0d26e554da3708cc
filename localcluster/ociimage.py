"""Write OCI image archives (``oci-layout`` + ``index.json`` + blobs, tarred) without a registry.

``ctr images import`` reads such an archive and names the image after the index entry's
``io.containerd.image.name`` annotation, so an image built here lands in a node's containerd
under the name a pod asks for. Layers are plain (uncompressed) tars: they are imported, never
pushed, and skipping gzip saves seconds per image. Entries are written in sorted order with
fixed times, owners and modes, so the same input gives the same digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a container runtime reads."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: [DEFAULT_PATH])
    user: str = ""
    workdir: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def render(self, diff_ids: list[str]) -> dict[str, object]:
        """The config document for layers with these uncompressed digests."""
        cfg: dict[str, object] = {"Env": self.env}
        for key, value in (("Entrypoint", self.entrypoint), ("Cmd", self.cmd), ("User", self.user),
                           ("WorkingDir", self.workdir), ("Labels", self.labels)):
            if value:
                cfg[key] = value
        # One history entry per layer: builders (buildah) refuse an image whose history and
        # layers disagree.
        history = [{"created": "1970-01-01T00:00:00Z", "created_by": f"localcluster layer {i}"}
                   for i in range(len(diff_ids))]
        return {"architecture": "amd64", "os": "linux", "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}


def _blob(data: bytes) -> tuple[str, int]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def layer_from_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A layer tar holding ``path -> (content, mode)`` (parent directories added), reproducibly."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            content, mode = files[path]
            _add_bytes(tar, path, content, mode)
    return buf.getvalue()


def write_archive(layers: list[Path | bytes], config: ImageConfig, name: str, out: Path) -> str:
    """Write an OCI archive of ``layers`` (tar files or bytes, bottom first) named ``name``.

    Returns the manifest digest. The archive is written beside ``out`` and renamed into place.
    """
    blobs: list[tuple[str, Path | bytes]] = []
    layer_descs, diff_ids = [], []
    for layer in layers:
        if isinstance(layer, bytes):
            digest, size = _blob(layer)
        else:
            h = hashlib.sha256()
            with layer.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest, size = "sha256:" + h.hexdigest(), layer.stat().st_size
        blobs.append((digest, layer))
        layer_descs.append({"mediaType": LAYER_TYPE, "digest": digest, "size": size})
        diff_ids.append(digest)
    cfg = json.dumps(config.render(diff_ids), sort_keys=True).encode()
    cfg_digest, cfg_size = _blob(cfg)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"mediaType": CONFIG_TYPE, "digest": cfg_digest, "size": cfg_size},
                           "layers": layer_descs}, sort_keys=True).encode()
    man_digest, man_size = _blob(manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": MANIFEST_TYPE, "digest": man_digest, "size": man_size,
         "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(index).encode())
        _add_bytes(tar, f"blobs/sha256/{cfg_digest[7:]}", cfg)
        _add_bytes(tar, f"blobs/sha256/{man_digest[7:]}", manifest)
        seen = set()
        for digest, layer in blobs:
            if digest in seen:
                continue
            seen.add(digest)
            if isinstance(layer, bytes):
                _add_bytes(tar, f"blobs/sha256/{digest[7:]}", layer)
            else:
                info = tar.gettarinfo(str(layer), arcname=f"blobs/sha256/{digest[7:]}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with layer.open("rb") as f:
                    tar.addfile(info, f)
    tmp.replace(out)
    return man_digest


def single_binary_archive(binary: Path, name: str, out: Path) -> str:
    """An image of one static program at ``/<its name>``, its entry point (the pause image)."""
    layer = layer_from_files({binary.name: (binary.read_bytes(), 0o755)})
    return write_archive([layer], ImageConfig(entrypoint=[f"/{binary.name}"], env=[]), name, out)
