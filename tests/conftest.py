"""Fixtures for tests against the real local control plane (shared by every test directory:
importing them elsewhere would make a second session cluster, which waits forever on the lock).

The cluster starts once per session (or a running one is reused: start it yourself with
``python -m localcluster up`` to keep it between runs). Where the binaries cannot be built
the tests skip with the reason on a developer's machine, and fail when ``CI=true``: CI must
never pass by skipping them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from localcluster import baseimage, build, controlplane, nodes, realnodes
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir, default_state_dir, session_lock
from localcluster.waiting import wait_until
from scripts import images

#: Process nodes the session cluster keeps (tests that fail nodes add their own).
NODES = 3


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
    lock = contextlib.ExitStack()
    lock.enter_context(session_lock(sd))  # another session (another clone, the demo) finishes first
    was_running = all(alive for _, _, alive, _ in controlplane.status(sd))
    foreign = controlplane.foreign_interpreter(sd) if was_running else None
    if foreign is not None:  # its pods would run another checkout's code: start one of our own
        print(f"\nthe running local cluster's node agents run {foreign}, not this checkout; restarting it",
              file=sys.stderr)
        controlplane.down(sd)
        was_running = False
    # Built binaries that fail to start are a bug, not a missing prerequisite: no skip here.
    # Without root (or ip/unshare) the control plane still comes up; node tests then skip.
    count = NODES if nodes.prerequisites() is None else 0
    try:
        kubeconfig = controlplane.up(sd, nodes_count=count)
    except Exception:
        if not was_running:  # a half-started cluster must not outlive the session
            controlplane.down(sd)
        raise
    yield Kubectl(kubeconfig, bin_dir)
    if not was_running and os.environ.get("LOCALCLUSTER_KEEP") != "1":
        controlplane.down(sd)
    lock.close()


@pytest.fixture(scope="session")
def state(kube: Kubectl) -> StateDir:
    """The session cluster's state directory."""
    return StateDir(default_state_dir())


@pytest.fixture(scope="session")
def kube_nodes(kube: Kubectl) -> Kubectl:
    """The session cluster, with process nodes that run pods (skips/fails where they cannot)."""
    why = nodes.prerequisites()
    if why is not None:
        _unavailable(why)
    return kube


@pytest.fixture
def ns(kube_nodes: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards without waiting), so tests never see
    each other's pods or Services."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_")[:25].lower()).strip("-")
    name = f"t-{stem}-{os.urandom(2).hex()}"
    kube_nodes("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": name}}))
    # Pods are refused until the service-account controller made the namespace's default one.
    wait_until(lambda: kube_nodes("get", "sa", "default", "-n", name, check=False).returncode == 0,
               timeout=30, what=f"the default ServiceAccount of {name}")
    yield name
    kube_nodes("delete", "namespace", name, "--wait=false", check=False)


#: Real nodes of the cluster the images run on: two, so that the e2e job can lose one and keep training.
REAL_NODES = 2


def _unavailable_images(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real nodes with the product images unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"real nodes with the product images unavailable: {reason} (CI=true turns this into a failure)")


def _progress(msg: str) -> None:
    print(f"images: {msg}", flush=True)


@pytest.fixture(scope="session")
def real_kube(bin_dir: Path) -> Iterator[Kubectl]:
    """A cluster of its own (state: LOCALCLUSTER_STATE + "-real") with REAL_NODES real nodes and
    no process node, the product images imported into every node: the e2e suite's real case and
    the images' own tests share it (one import per node per session). Kept with LOCALCLUSTER_KEEP=1."""
    why = realnodes.prerequisites()
    if why:
        _unavailable_images(why)
    try:
        built = images.build_all(_progress)
    except (images.ImageBuildError, baseimage.BaseImageError) as e:
        _unavailable_images(str(e))
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


def install_crd(kube: Kubectl) -> Kubectl:
    """Apply the DeepSeekTrainingJob CRD and wait until it is established; returns `kube`.

    `--force-conflicts`: a Helm install earlier in the session owns the same fields (the chart ships
    the same file), and server-side apply would otherwise refuse to take them back.
    """
    from dstj_operator.crd import CRD_FILE, GROUP, PLURAL

    kube("apply", "--server-side", "--force-conflicts", "-f", str(Path(__file__).resolve().parents[1] / CRD_FILE))
    # check=False: a CRD created a moment ago has no conditions yet, and kubectl's jsonpath filter fails on that.
    wait_until(lambda: kube("get", f"crd/{PLURAL}.{GROUP}", "-o",
                            "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                            check=False).stdout == "True",
               timeout=30, what="the CRD to be established")
    return kube
