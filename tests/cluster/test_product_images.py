"""The operator and trainer images, built here from their Dockerfiles (``make images``), hold what
they should and run as the chart declares: non-root (uid 65532) with a read-only root file system,
on a real node (kubelet + containerd + runc: the e2e suite's real-node cluster, ``real_kube``, so a
session imports the images once). The operator image carries no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from localcluster import baseimage
from localcluster.kubectl import Kubectl
from scripts import images
from tests.cluster.kobjects import apply, phase, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.images]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"images unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"images unavailable: {reason}")


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    try:
        return images.build_all(lambda _m: None)
    except (images.ImageBuildError, baseimage.BaseImageError) as e:
        _unavailable(str(e))
    raise AssertionError("unreachable")


def _layer_names(path: Path, media_type: str) -> set[str]:
    """Every path in one layer, as ``tar -t`` lists it from the decompressor's stream: the trainer's
    3 GB gzip layer took ~40 s through Python's tarfile and zlib, a few seconds through igzip and tar."""
    if media_type.endswith("+zstd"):
        unpack: list[str] = ["--use-compress-program=zstd"]
    elif media_type.endswith("+gzip"):
        unpack = [f"--use-compress-program={'igzip' if shutil.which('igzip') else 'gzip'}"]
    else:
        unpack = []
    listing = subprocess.run(["tar", *unpack, "-tf", str(path)], capture_output=True, text=True, check=True).stdout
    return {n.lstrip("./").rstrip("/") for n in listing.splitlines()}


def _members_and_config(layout: Path) -> tuple[set[str], dict[str, object]]:
    """Every path in the image's layers, and its config (from an OCI layout, zstd or gzip layers)."""
    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/", 1)

    manifest = json.loads(blob(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    names: set[str] = set()
    for layer in manifest["layers"]:
        names |= _layer_names(blob(layer["digest"]), layer["mediaType"])
    return names, config


def test_the_operator_image_carries_no_torch_and_the_trainer_image_does(archives: dict[str, Path]) -> None:
    operator, op_config = _members_and_config(archives["operator"])
    trainer, tr_config = _members_and_config(archives["trainer"])

    assert not [n for n in operator if "/site-packages/torch/" in n]
    assert any(n.endswith("/site-packages/torch/__init__.py") for n in trainer)
    assert any(n.endswith("/site-packages/kopf/__init__.py") for n in operator)
    for cfg in (op_config, tr_config):
        assert cfg["config"]["User"] == "65532:65532"  # type: ignore[index]
    assert op_config["config"]["Entrypoint"] == ["python", "-m", "dstj_operator"]  # type: ignore[index]
    assert tr_config["config"]["Entrypoint"] == ["python", "-m", "moe_trainer.launch"]  # type: ignore[index]


PROBE = """
import importlib.util, os, sys
print("uid", os.getuid(), os.getgid())
try:
    open("/opt/app/probe", "w")
except OSError as e:
    print("root fs", e.strerror)
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
print("missing", missing)
"""
MODULES = {"operator": ["dstj_operator.__main__", "kopf", "kubernetes"],
           "trainer": ["moe_trainer.launch", "moe_trainer.train", "moe_trainer.rdzv_store", "torch.distributed.run"]}


@pytest.mark.parametrize("which", ["operator", "trainer"])
def test_the_image_runs_as_non_root_with_a_read_only_root_and_has_its_entry_points(
        real_kube: Kubectl, which: str) -> None:
    kube, name = real_kube, f"probe-{which}"
    # The chart's securityContext (templates/deployment.yaml), with the image's own user.
    security = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "containers": [{
            "name": "main", "image": images.IMAGES[which].name.removeprefix("docker.io/library/"),
            "command": ["python", "-c", PROBE, *MODULES[which]], "securityContext": security}]}}
    apply(kube, "default", body)
    done = wait_for(kube, "pod", name, "default", lambda p: phase(p) in ("Succeeded", "Failed"), timeout=120)
    log = kube("logs", name).stdout
    kube("delete", "pod", name, "--wait=false")

    assert phase(done) == "Succeeded", log
    assert "uid 65532 65532" in log
    assert "root fs Read-only file system" in log
    assert "missing []" in log
