"""The Helm chart against the real API server: strict server-side validation of what it renders, its
RBAC as the operator's own ServiceAccount sees it, and a real `helm install` / `helm uninstall`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dstj_api.contract import KIND, VERSION
from dstj_operator import children
from dstj_operator.crd import GROUP, PLURAL
from dstj_operator.crd_revision import CRD_NAME
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from scripts.manifests import CHART, CHART_CRD
from tests.helmchart import VALUE_SETS, Helm, by_kind, helm, operator_needs  # noqa: F401 - the helm fixture

pytestmark = pytest.mark.cluster
#: Kinds whose CRDs (Prometheus Operator) the local cluster does not have.
NOT_INSTALLED = {"ServiceMonitor", "PodMonitor"}
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.fixture(scope="module")
def crd(kube: Kubectl) -> Kubectl:
    """The CRD installed and established (authorization checks by resource name need its discovery)."""
    kube("apply", "--server-side", "-f", str(CHART_CRD))
    wait_until(lambda: kube("get", f"crd/{PLURAL}.{GROUP}", "-o",
                            "jsonpath={.status.conditions[?(@.type=='Established')].status}").stdout == "True",
               timeout=30, what="the CRD to be established")
    return kube


@pytest.fixture
def extra_namespaces(kube_nodes: Kubectl, ns: str) -> Iterator[list[str]]:
    """Two more namespaces beside `ns`, for watchNamespaces (the chart's Roles need them to exist)."""
    names = [f"{ns}-a", f"{ns}-b"]
    for name in names:
        kube_nodes("create", "namespace", name)
    yield names
    for name in names:
        kube_nodes("delete", "namespace", name, "--wait=false", check=False)


def _values(name: str, watched: list[str]) -> dict[str, Any]:
    """A documented value set, with its example namespaces replaced by ones that exist."""
    values = json.loads(json.dumps(VALUE_SETS[name]))
    if values.get("watchNamespaces"):
        values["watchNamespaces"] = watched[:len(values["watchNamespaces"])]
    return values


def _stream(objs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_the_rendered_manifests_pass_strict_server_side_validation(
        kube_nodes: Kubectl, ns: str, extra_namespaces: list[str], helm: Helm, name: str) -> None:  # noqa: F811
    objs = [o for o in helm.render(_values(name, extra_namespaces), release=ns, namespace=ns)
            if o["kind"] not in NOT_INSTALLED]
    res = kube_nodes("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=_stream(objs), check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(server dry run)") == len(objs), res.stdout


def can_i(kube: Kubectl, account: str, verb: str, group: str, resource: str, namespace: str | None,
          name: str | None = None) -> bool:
    """What the API server's authorizer answers for `account` (SelfSubjectAccessReview by impersonation)."""
    plain, _, sub = resource.partition("/")
    target = (f"{plain}.{group}" if group else plain) + (f"/{name}" if name else "")
    args = ["auth", "can-i", verb, target,
            f"--as={account}", *(["--subresource", sub] if sub else []),
            *(["-n", namespace] if namespace else ["-A"])]
    res = kube(*args, check=False)
    assert res.stdout.strip() in ("yes", "no"), res.stderr
    return res.stdout.strip() == "yes"


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_the_operator_account_may_run_a_job_and_no_more(kube_nodes: Kubectl, crd: Kubectl, ns: str,
                                                        extra_namespaces: list[str], helm: Helm,  # noqa: F811
                                                        mode: str) -> None:
    watched, other = extra_namespaces
    values: dict[str, Any] = {"leaderElection": {"enabled": True}}
    if mode == "namespaced":
        values["watchNamespaces"] = [watched]
    rbac = [o for o in helm.render(values, release=ns, namespace=ns) if o["kind"] in RBAC_KINDS]
    account_name = by_kind(rbac, "ServiceAccount")[0]["metadata"]["name"]
    account = f"system:serviceaccount:{ns}:{account_name}"
    kube_nodes("apply", "--server-side", "-f", "-", stdin=_stream(rbac))
    try:
        # Everything a reconcile pass and the handlers call, in a watched namespace.
        missing = [n for n in sorted(operator_needs()) if not can_i(kube_nodes, account, n[2], n[0], n[1], watched)]
        assert not missing, f"{account} may not {missing} in {watched}"
        # The per-job worker RBAC, created as the operator: the API server's escalation check passes.
        # Owned by a job that exists: the garbage collector deletes what a missing owner owns, and a Role
        # collected before its RoleBinding is created fails the binding with NotFound (every time once the
        # operator tests before this one had the collector busy and quick; by luck when it was slow).
        owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "moe", "namespace": watched},
                 "spec": {"replicas": 1}}
        job = json.loads(kube_nodes("create", "-f", "-", "-o", "json", stdin=json.dumps(owner)).stdout)
        # Retried: the RBAC check may briefly lag the Role just created; the operator's next pass retries the same.
        for obj in children.worker_rbac(job):
            wait_until(lambda obj=obj: kube_nodes("create", "-f", "-", f"--as={account}", stdin=json.dumps(obj),
                                                  check=False).returncode == 0, timeout=30,
                       what=f"the operator's account to create {obj['kind']} {obj['metadata']['name']}")
        # Its leader Lease, and only that one.
        for verb in ("get", "update"):
            assert can_i(kube_nodes, account, verb, "coordination.k8s.io", "leases", ns, account_name)
            assert not can_i(kube_nodes, account, verb, "coordination.k8s.io", "leases", ns, "kube-scheduler")
        assert can_i(kube_nodes, account, "create", "coordination.k8s.io", "leases", ns)
        # Its own CRD's revision, read at start, and no other CRD.
        assert can_i(kube_nodes, account, "get", "apiextensions.k8s.io", "customresourcedefinitions", None, CRD_NAME)
        assert not can_i(kube_nodes, account, "get", "apiextensions.k8s.io", "customresourcedefinitions", None,
                         "leases.coordination.k8s.io")
        assert not can_i(kube_nodes, account, "list", "apiextensions.k8s.io", "customresourcedefinitions", None)
        # Nothing it does not use.
        assert not can_i(kube_nodes, account, "get", "", "secrets", watched)
        # Nodes: read (never written) only cluster-wide, where their arrival is autoscaling's capacity signal.
        assert can_i(kube_nodes, account, "watch", "", "nodes", None) == (mode == "cluster-wide")
        assert not can_i(kube_nodes, account, "update", "", "nodes", None)
        assert not can_i(kube_nodes, account, "create", GROUP, PLURAL, watched)  # jobs are the users'
        assert not can_i(kube_nodes, account, "create", "coordination.k8s.io", "leases", watched)
        if mode == "namespaced":
            assert not can_i(kube_nodes, account, "list", "", "pods", other)
            assert not can_i(kube_nodes, account, "list", GROUP, PLURAL, None)  # all namespaces
    finally:
        for obj in rbac:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube_nodes("delete", obj["kind"].lower(), obj["metadata"]["name"], "--wait=false", check=False)


def _helm_kube(helm: Helm, kube: Kubectl, *args: str, check: bool = True) -> str:  # noqa: F811
    return helm(*args, f"--kubeconfig={kube.kubeconfig}", check=check).stdout


@pytest.mark.slow
def test_a_two_replica_helm_install_waits_for_both_ready_and_uninstall_leaves_only_the_crd(
        kube_nodes: Kubectl, crd: Kubectl, ns: str, helm: Helm) -> None:  # noqa: F811
    # `crd`: this checkout's CRD (Helm would keep an older one a previous session applied, and the
    # operator refuses to start against an older revision).
    release = ns
    selector = f"app.kubernetes.io/instance={release}"
    # Namespaced, so this operator never touches jobs of other tests. Two replicas: `--wait` returns
    # only when the leader's watches are connected (/readyz) and the standby reads the Lease.
    values = helm.values_file({"watchNamespaces": [ns], "replicas": 2, "image": {"repository": "deepseek-operator"}})
    res = helm("install", release, str(CHART), "--namespace", ns, "-f", str(values),
               f"--kubeconfig={kube_nodes.kubeconfig}", "--wait", "--timeout=150s", check=False, timeout=170)
    try:
        ready = kube_nodes("get", "pods", "-n", ns, "-l", selector, "-o",
                           "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}").stdout.split()
        if res.returncode != 0 or ready != ["True", "True"]:
            logs = kube_nodes("logs", "-n", ns, "-l", selector, "--tail=30", "--prefix", check=False)
            events = kube_nodes("get", "events", "-n", ns, "--field-selector", "reason=Unhealthy", "-o",
                                "jsonpath={.items[*].message}", check=False)
            pytest.fail(f"helm install --wait: {res.stderr.strip()} (Ready: {ready}); probe failures: "
                        f"{events.stdout[:1500]}; operator log tail:\n{logs.stdout}{logs.stderr}", pytrace=False)
        holder = kube_nodes("get", "lease", "-n", ns, "-o", "jsonpath={.items[*].spec.holderIdentity}").stdout
        pods = kube_nodes("get", "pods", "-n", ns, "-l", selector, "-o", "jsonpath={.items[*].metadata.name}").stdout
        assert holder in pods.split(), (holder, pods)  # one leads, the other stands by, both Ready
    finally:
        _helm_kube(helm, kube_nodes, "uninstall", release, "--namespace", ns, "--wait", "--timeout=90s")

    kinds = "all,serviceaccounts,roles,rolebindings,configmaps,secrets,leases,poddisruptionbudgets"

    def leftovers() -> list[str]:
        left = kube_nodes("get", kinds, "-n", ns, "-l", selector, "-o", "name").stdout.split()
        left += kube_nodes("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name").stdout.split()
        return left + kube_nodes("get", "secrets", "-n", ns, "-l", f"owner=helm,name={release}", "-o",
                                 "name").stdout.split()

    # The operator pod may still be in its termination grace period right after `uninstall --wait`.
    wait_until(lambda: not leftovers(), timeout=90, what="helm uninstall to leave nothing behind")
    assert kube_nodes("get", "crd", f"{PLURAL}.{GROUP}", check=False).returncode == 0, "the CRD must stay"
