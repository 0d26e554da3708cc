"""The e2e suite's cluster: DSTJ_E2E_KUBECONFIG when set (kind, a real cluster), else a local cluster,
once with process nodes and once with real nodes (kubelet + containerd + runc) running the images
built here (`make images`; the `images` marker, since building them is the slow part)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from localcluster import baseimage, build, controlplane, realnodes
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir, default_state_dir
from scripts import images
from tests.helmchart import helm  # noqa: F401 - the pinned helm fixture

#: Real nodes of the e2e cluster: two, so that one can be lost while the job keeps training.
REAL_NODES = 2


@dataclass(frozen=True)
class E2ECluster:
    """The cluster under test and what its nodes are."""

    kube: Kubectl
    kind: str  # "external", "process" or "real"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real-node e2e unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"real-node e2e unavailable: {reason} (CI=true turns this into a failure)")


def _progress(msg: str) -> None:
    print(f"e2e: {msg}", flush=True)


@pytest.fixture(scope="session")
def real_kube(bin_dir: Path) -> Iterator[Kubectl]:
    """A cluster of its own (state: LOCALCLUSTER_STATE + "-real") with REAL_NODES real nodes and
    no process node, the product images imported into every node. Kept with LOCALCLUSTER_KEEP=1."""
    why = realnodes.prerequisites()
    if why:
        _unavailable(why)
    try:
        built = images.build_all(_progress)
    except (images.ImageBuildError, baseimage.BaseImageError) as e:
        _unavailable(str(e))
    base = default_state_dir()
    sd = StateDir(base.with_name(base.name + "-real"))
    # No session lock: the process-node cluster's (held by this session) would deadlock it, and this
    # cluster's state directory is this clone's own.
    try:
        kubeconfig = controlplane.up(sd, real_nodes_count=REAL_NODES)
        images.import_into(sd, built, _progress)
    except Exception:
        controlplane.down(sd)
        raise
    yield Kubectl(kubeconfig, build.bin_dir())
    if os.environ.get("LOCALCLUSTER_KEEP") != "1":
        controlplane.down(sd)


@pytest.fixture(scope="session", params=["process", pytest.param("real", marks=pytest.mark.images)])
def e2e_cluster(request: pytest.FixtureRequest, bin_dir: Path) -> E2ECluster:
    """The cluster under test: the external one (once), or the local one with each kind of node."""
    path = os.environ.get("DSTJ_E2E_KUBECONFIG")
    if path:
        if request.param != "process":
            pytest.skip("DSTJ_E2E_KUBECONFIG names the cluster under test: it runs once")
        return E2ECluster(Kubectl(Path(path), bin_dir), "external")
    fixture = "kube_nodes" if request.param == "process" else "real_kube"
    return E2ECluster(request.getfixturevalue(fixture), request.param)
