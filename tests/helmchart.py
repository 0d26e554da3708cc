"""Shared test helpers for the Helm chart: run the pinned helm, render the chart to objects, read RBAC,
and derive the permissions the operator needs from its own code (a reconcile pass on a recording stub).

The `helm` fixture skips on a developer's machine without the binary and fails when `CI=true`
(the local cluster's `_unavailable` rule). helm writes its cache and config under a temporary
home, never the user's.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dstj_api.contract import KIND, VERSION
from dstj_operator.cluster import Cluster
from dstj_operator.converge import Mode
from dstj_operator.crd import GROUP, PLURAL
from dstj_operator.reconcile import reconcile
from localcluster.build import BuildError
from scripts.manifests import CHART, helm_binary, helm_env
from tests.conftest import _unavailable

#: Value sets every structural test runs over: the defaults and the variations users are told about.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "two-replicas": {"replicas": 2},
    "namespaced-ha": {"watchNamespaces": ["team-a"], "replicas": 3, "leaderElection": {"leaseName": "dstj-lead"}},
    "monitors": {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
}


@dataclass(frozen=True)
class Helm:
    """The helm binary with a private home directory."""

    binary: Path
    home: Path

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``helm ARGS``; with ``check`` a non-zero exit fails the test with helm's stderr."""
        res = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=timeout,
                             check=False, env=helm_env(self.home))
        if check and res.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}", pytrace=False)
        return res

    def values_file(self, values: dict[str, Any]) -> Path:
        """Write ``values`` to a file helm reads with ``-f`` (JSON is YAML)."""
        fd, name = tempfile.mkstemp(dir=self.home, prefix="values-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(values, f)
        return Path(name)

    def template(self, values: dict[str, Any] | None = None, *, release: str = "dstj",
                 namespace: str = "dstj-system", check: bool = True) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the chart with ``values``."""
        return self("template", release, str(CHART), "--namespace", namespace,
                    "-f", str(self.values_file(values or {})), check=check)

    def render(self, values: dict[str, Any] | None = None, *, release: str = "dstj",
               namespace: str = "dstj-system") -> list[dict[str, Any]]:
        """The chart rendered with ``values``, as a list of objects."""
        return objects(self.template(values, release=release, namespace=namespace).stdout)


def objects(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objs if o["kind"] == kind]


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """Whether a list of PolicyRules grants ``verb`` on ``group/resource`` (named ``name``), as RBAC decides."""
    for rule in rules:
        names = rule.get("resourceNames")
        if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                and verb in rule.get("verbs", []) and (not names or name in names)):
            return True
    return False


#: Kind -> (API group, resource) for every kind the reconciler may create.
RESOURCES = {
    "ConfigMap": ("", "configmaps"), "Service": ("", "services"), "Pod": ("", "pods"),
    "ServiceAccount": ("", "serviceaccounts"), "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Role": ("rbac.authorization.k8s.io", "roles"), "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
}
#: What each Cluster method needs, besides create_if_absent (recorded per object below).
CLUSTER_CALLS = {
    "connect": [], "job": [(GROUP, PLURAL, "get")], "create_if_absent": [], "converge": [],
    "pods": [("", "pods", "list")], "delete_pod": [("", "pods", "delete")],
    "progress": [("", "configmaps", "get")], "event": [("", "events", "create")],
    "scale_up_triggered": [("", "events", "list")],
    "autoscalers": [("autoscaling", "horizontalpodautoscalers", "list")],
}
#: Child kinds the handlers watch by label, so a child edited or deleted by hand heals in the next pass.
WATCHED_CHILDREN = [RESOURCES[k] for k in ("Pod", "ConfigMap", "Service", "ServiceAccount", "Role", "RoleBinding",
                                           "PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim")]
#: What handlers.py and kopf's watches need: watch the job, its pods and ConfigMaps; read and patch the job.
HANDLER_CALLS = [
    *((GROUP, PLURAL, v) for v in ("list", "watch", "get", "delete")), (GROUP, f"{PLURAL}/status", "patch"),
    *((group, resource, verb) for group, resource in WATCHED_CHILDREN for verb in ("list", "watch")),
]


class RecordingCluster:
    """Stands in for `Cluster` and records the (group, resource, verb) each call of a pass needs."""

    def __init__(self) -> None:
        self.needs: set[tuple[str, str, str]] = set()

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        group, resource = RESOURCES.get(obj["kind"], ("?", obj["kind"]))
        assert group != "?", f"the operator creates a {obj['kind']}: add it to RESOURCES and the chart's RBAC"
        self.needs.add((group, resource, "create"))
        return True

    def converge(self, obj: dict[str, Any], mode: Mode = Mode.APPLY) -> bool:
        self.create_if_absent(obj)  # server-side apply creates a missing child: it needs create and patch
        if mode is not Mode.CREATE_ONLY:  # apply, or read and replace what apply cannot undo
            self.needs |= {(*RESOURCES[obj["kind"]], verb) for verb in ("patch", "get", "update")}
        return True

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        pass

    def progress(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def event(self, job: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        pass

    def scale_up_triggered(self, namespace: str) -> set[str]:
        return set()

    def autoscalers(self, namespace: str, job: str) -> list[str]:
        return []


def operator_needs() -> set[tuple[str, str, str]]:
    """Every permission one reconcile pass of a job with every optional child needs, plus the handlers'."""
    public = {n for n, _ in inspect.getmembers(Cluster, inspect.isfunction) if not n.startswith("_")}
    public |= {n for n, m in vars(Cluster).items() if isinstance(m, classmethod)}
    assert public == set(CLUSTER_CALLS), "Cluster's methods changed: record what the new ones need in CLUSTER_CALLS"
    recorder = RecordingCluster()
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
           "metadata": {"name": "moe", "namespace": "team-a", "uid": "uid-1", "generation": 1},
           "spec": {"replicas": 2, "checkpoint": {"storageClass": "shared"}}}
    reconcile(recorder, job)  # type: ignore[arg-type]
    return recorder.needs | {n for calls in CLUSTER_CALLS.values() for n in calls} | set(HANDLER_CALLS)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned helm (built with the local cluster's binaries); skips without it, fails in CI."""
    try:
        binary = helm_binary()
    except (BuildError, OSError) as e:
        reason = f"no helm binary: {e}"
    else:
        if binary.is_file():
            return Helm(binary, tmp_path_factory.mktemp("helm-home"))
        reason = f"no helm binary at {binary}"
    _unavailable(reason)  # outside the except block: no chained traceback in the report
    raise AssertionError("unreachable")
