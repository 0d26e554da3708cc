"""The e2e suite's cluster: DSTJ_E2E_KUBECONFIG when set (kind, a real cluster), else the local cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localcluster.kubectl import Kubectl
from tests.helmchart import helm  # noqa: F401 - the pinned helm fixture


@pytest.fixture(scope="session")
def e2e_kube(request: pytest.FixtureRequest, bin_dir: Path) -> Kubectl:
    """kubectl for the cluster under test."""
    path = os.environ.get("DSTJ_E2E_KUBECONFIG")
    if path:
        return Kubectl(Path(path), bin_dir)
    kube: Kubectl = request.getfixturevalue("kube_nodes")
    return kube
