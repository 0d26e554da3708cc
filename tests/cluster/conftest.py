"""Fixtures for tests against the real local control plane.

The cluster starts once per session (or a running one is reused: start it yourself with
``python -m localcluster up`` to keep it between runs). Where the binaries cannot be built
the tests skip with the reason on a developer's machine, and fail when ``CI=true``: CI must
never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from localcluster import build, controlplane
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir, default_state_dir


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine, fail in CI (where skipping would hide a broken build)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"local cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"local cluster unavailable: {reason} (CI=true turns this into a failure)")


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The directory of the built binaries (building them once if needed)."""
    try:
        return build.bin_dir()
    except (build.BuildError, OSError) as e:
        reason = str(e)
    _unavailable(reason)  # outside the except block: no chained traceback in the report
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def kube(bin_dir: Path) -> Iterator[Kubectl]:
    """Bring the default cluster up, or reuse a running one, and yield its admin access.

    A cluster this fixture started is stopped at the end of the session (set
    LOCALCLUSTER_KEEP=1 to keep it); one that was already running is left alone.
    """
    sd = StateDir(default_state_dir())
    was_running = all(alive for _, _, alive, _ in controlplane.status(sd))
    # Built binaries that fail to start are a bug, not a missing prerequisite: no skip here.
    kubeconfig = controlplane.up(sd)
    yield Kubectl(kubeconfig, bin_dir)
    if not was_running and os.environ.get("LOCALCLUSTER_KEEP") != "1":
        controlplane.down(sd)
