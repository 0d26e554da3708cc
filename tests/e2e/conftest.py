"""The e2e suite's cluster: DSTJ_E2E_KUBECONFIG when set (kind, a real cluster), else a local cluster,
once with process nodes and once with real nodes (kubelet + containerd + runc) running the images
built here (``real_kube`` in tests/conftest.py; the `images` marker: `make test` runs those in a pytest
session of its own, `make test-images`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcluster.kubectl import Kubectl
from tests.helmchart import helm  # noqa: F401 - the pinned helm fixture


@dataclass(frozen=True)
class E2ECluster:
    """The cluster under test and what its nodes are."""

    kube: Kubectl
    kind: str  # "external", "process" or "real"


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
