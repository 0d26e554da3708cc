"""OCI archives written for real nodes: reproducible, and named as ``ctr images import`` reads them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from localcluster import ociimage


def test_the_same_files_give_the_same_manifest_digest_and_the_index_names_the_image(tmp_path: Path) -> None:
    layer = ociimage.layer_from_files({"bin/tool": (b"#!/bin/sh\n", 0o755)})
    cfg = ociimage.ImageConfig(entrypoint=["/bin/tool"], user="65532:65532")

    first = ociimage.write_archive([layer], cfg, "localcluster.dev/tool:1", tmp_path / "a.tar")
    second = ociimage.write_archive([ociimage.layer_from_files({"bin/tool": (b"#!/bin/sh\n", 0o755)})], cfg,
                                    "localcluster.dev/tool:1", tmp_path / "b.tar")

    assert first == second
    with tarfile.open(tmp_path / "a.tar") as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        entry = index["manifests"][0]
        assert entry["digest"] == first
        assert entry["annotations"]["io.containerd.image.name"] == "localcluster.dev/tool:1"
        manifest = json.load(tar.extractfile(f"blobs/sha256/{first[7:]}"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'][7:]}"))  # type: ignore[arg-type]
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["config"]["User"] == "65532:65532"
    # Builders (buildah) refuse an image whose history does not list each layer.
    assert len(config["history"]) == len(config["rootfs"]["diff_ids"]) == 1
