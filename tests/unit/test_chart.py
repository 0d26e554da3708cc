"""The Helm chart: lints, renders for each documented value set, refuses bad values naming the field,
and grants the operator exactly what its code calls (no wildcards, nothing cluster-wide when namespaced
but reading its own CRD).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dstj_operator import children
from dstj_operator.crd import CRD_FILE
from dstj_operator.crd_revision import CRD_NAME
from scripts.manifests import CHART, CHART_CRD, DEPLOY, render_deploy
from tests.helmchart import VALUE_SETS, Helm, allows, by_kind, helm, operator_needs  # noqa: F401 - the helm fixture

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
CRD_READER = "dstj-deepseek-operator-crd-reader"
"""The one cluster-wide grant of a namespaced install: `get` on the operator's own CRD."""


def cluster_wide(objs: list[dict[str, Any]]) -> list[str]:
    """Cluster-scoped objects other than the CRD reader's ClusterRole and binding."""
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objs
            if o["kind"] in CLUSTER_SCOPED and o["metadata"]["name"] != CRD_READER]

def operator_rules(objs: list[dict[str, Any]], namespace: str | None) -> list[dict[str, Any]]:
    """The rules the operator's account holds in `namespace` (None: cluster-wide), excluding the Lease Role."""
    rules = [r for o in by_kind(objs, "ClusterRole") for r in o["rules"]]
    if namespace is not None:
        rules += [r for o in by_kind(objs, "Role") if o["metadata"]["namespace"] == namespace
                  and not o["metadata"]["name"].endswith("-leader-election") for r in o["rules"]]
    return rules


def test_the_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    assert CHART_CRD.read_bytes() == (ROOT / CRD_FILE).read_bytes(), "the chart's CRD is stale: run `make crds`"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict_passes(helm: Helm, values: dict[str, Any]) -> None:  # noqa: F811
    res = helm("lint", "--strict", str(CHART), "-f", str(helm.values_file(values)), check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_default_values_grant_cluster_wide_rbac_to_one_operator_without_leader_election(helm: Helm) -> None:  # noqa: F811
    objs = helm.render()
    assert {o["kind"] for o in objs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                                         "Deployment"}
    deployment = by_kind(objs, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two unelected operators at once
    assert env(deployment)["DSTJ_LEADER_ELECTION"] == "false"
    assert env(deployment)["DSTJ_WATCH_NAMESPACES"] == ""


def test_watch_namespaces_grant_a_role_in_each_and_nothing_cluster_wide(helm: Helm) -> None:  # noqa: F811
    objs = helm.render(VALUE_SETS["namespaced"])
    assert not cluster_wide(objs)
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in by_kind(objs, "Role")}
    assert roles == {("team-a", "dstj-deepseek-operator"), ("team-b", "dstj-deepseek-operator")}
    for binding in by_kind(objs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dstj-deepseek-operator",
                                        "namespace": "dstj-system"}]
    assert env(by_kind(objs, "Deployment")[0])["DSTJ_WATCH_NAMESPACES"] == "team-a,team-b"


def test_two_replicas_elect_a_leader_through_a_lease_in_the_release_namespace(helm: Helm) -> None:  # noqa: F811
    objs = helm.render(VALUE_SETS["two-replicas"])
    deployment = by_kind(objs, "Deployment")[0]
    assert env(deployment)["DSTJ_LEADER_ELECTION"] == "true"
    assert env(deployment)["DSTJ_LEADER_LEASE"] == "dstj-deepseek-operator"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    lease_role = next(o for o in by_kind(objs, "Role") if o["metadata"]["name"].endswith("-leader-election"))
    assert lease_role["metadata"]["namespace"] == "dstj-system"
    for verb in ("get", "update"):
        assert allows(lease_role["rules"], "coordination.k8s.io", "leases", verb, "dstj-deepseek-operator")
        assert not allows(lease_role["rules"], "coordination.k8s.io", "leases", verb, "someone-elses-lease")
    assert allows(lease_role["rules"], "coordination.k8s.io", "leases", "create")
    assert by_kind(objs, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1


def test_the_leader_election_value_turns_it_on_for_one_replica(helm: Helm) -> None:  # noqa: F811
    objs = helm.render({"leaderElection": {"enabled": True, "leaseName": "custom"}})
    assert env(by_kind(objs, "Deployment")[0])["DSTJ_LEADER_LEASE"] == "custom"
    assert not by_kind(objs, "PodDisruptionBudget")  # one pod: a budget would block every drain


BAD_VALUES = [
    pytest.param({"replicas": "two"}, "/replicas", id="replicas-not-a-number"),
    pytest.param({"replica": 2}, "'replica' not allowed", id="unknown-top-level-key"),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="bad-pull-policy"),
    pytest.param({"image": {"repo": "x"}}, "'repo' not allowed", id="unknown-image-key"),
    pytest.param({"watchNamespaces": "team-a,team-b"}, "/watchNamespaces", id="namespaces-as-a-string"),
    pytest.param({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", id="namespace-not-a-dns-label"),
    pytest.param({"logLevel": "verbose"}, "/logLevel", id="unknown-log-level"),
    pytest.param({"metrics": {"port": 70000}}, "/metrics/port", id="port-out-of-range"),
    pytest.param({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled", id="boolean-as-a-string"),
    pytest.param({"securityContext": {"runAsRoot": True}}, "'runAsRoot' not allowed", id="unknown-security-key"),
    pytest.param({"serviceAccount": {"create": False}}, "serviceAccount.name is required", id="no-account-named"),
    pytest.param({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
                 "metrics.serviceMonitor.enabled needs metrics.service.enabled", id="monitor-without-service"),
    pytest.param({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval",
                 id="interval-not-a-duration"),
    pytest.param({"health": {"port": 8080}}, "metrics.port and health.port must differ", id="ports-collide"),
    pytest.param({"health": {"stuckSeconds": 1}}, "/health/stuckSeconds", id="stuck-seconds-too-short"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_a_wrong_value_is_refused_naming_the_field(helm: Helm, values: dict[str, Any], message: str) -> None:  # noqa: F811
    res = helm.template(values, check=False)
    assert res.returncode != 0, f"helm accepted {values}"
    assert message in res.stderr, res.stderr


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rbac_has_no_wildcards_and_nothing_cluster_scoped_when_namespaced(
        helm: Helm, values: dict[str, Any]) -> None:  # noqa: F811
    objs = helm.render(values)
    for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: {field} has a wildcard"
            assert "nonResourceURLs" not in rule
    if values.get("watchNamespaces"):
        assert not cluster_wide(objs)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_operator_may_read_its_own_crd_and_no_other(helm: Helm, values: dict[str, Any]) -> None:  # noqa: F811
    objs = helm.render(values)
    reader = next(o for o in by_kind(objs, "ClusterRole") if o["metadata"]["name"] == CRD_READER)
    assert reader["rules"] == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                                "resourceNames": [CRD_NAME], "verbs": ["get"]}]
    binding = next(o for o in by_kind(objs, "ClusterRoleBinding") if o["metadata"]["name"] == CRD_READER)
    assert binding["roleRef"]["name"] == CRD_READER
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dstj-deepseek-operator",
                                    "namespace": "dstj-system"}]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_operator_may_do_everything_its_code_calls(helm: Helm, values: dict[str, Any]) -> None:  # noqa: F811
    objs = helm.render(values)
    for namespace in values.get("watchNamespaces") or [None]:
        rules = operator_rules(objs, namespace)
        missing = [n for n in sorted(operator_needs()) if not allows(rules, *n)]
        assert not missing, f"the chart's RBAC lacks {missing} (namespace {namespace})"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_operator_holds_every_permission_it_grants_to_workers(helm: Helm, values: dict[str, Any]) -> None:  # noqa: F811
    # RBAC refuses to create a Role that grants more than its creator holds (escalation check).
    objs = helm.render(values)
    job = {"metadata": {"name": "moe", "namespace": "team-a", "uid": "uid-1"}}
    worker_role = next(o for o in children.worker_rbac(job) if o["kind"] == "Role")
    for namespace in values.get("watchNamespaces") or [None]:
        rules = operator_rules(objs, namespace)
        for rule in worker_role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [None]:
                            assert allows(rules, group, resource, verb, name), (group, resource, verb, name)


def env(deployment: dict[str, Any]) -> dict[str, str]:
    """The operator container's plain `value` env vars."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_deployment_sets_the_operator_runtime_interface(helm: Helm) -> None:  # noqa: F811
    deployment = by_kind(helm.render(), "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert env(deployment) == {"DSTJ_WATCH_NAMESPACES": "", "DSTJ_LEADER_ELECTION": "false",
                               "DSTJ_LEADER_LEASE": "dstj-deepseek-operator", "DSTJ_METRICS_PORT": "8080",
                               "DSTJ_HEALTH_PORT": "8081", "DSTJ_STUCK_SECONDS": "300", "DSTJ_LOG_LEVEL": "info",
                               "DSTJ_STATUS_PROGRESS_SECONDS": "30"}
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["image"] == "deepseek-operator:0.1.0"  # the chart's appVersion


def test_the_operator_runs_non_root_read_only_without_capabilities(helm: Helm) -> None:  # noqa: F811
    pod = by_kind(helm.render(), "Deployment")[0]["spec"]["template"]["spec"]
    context = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_the_monitors_scrape_the_metrics_port(helm: Helm) -> None:  # noqa: F811
    objs = helm.render(VALUE_SETS["monitors"])
    service = next(o for o in by_kind(objs, "Service") if o["metadata"]["name"].endswith("-metrics"))
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics",
                                         "protocol": "TCP"}]
    assert by_kind(objs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] == "metrics"
    assert by_kind(objs, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert not by_kind(helm.render(), "ServiceMonitor") and not by_kind(helm.render(), "PodMonitor")


def test_the_plain_manifests_in_deploy_match_the_chart(helm: Helm) -> None:  # noqa: F811
    assert DEPLOY.read_text() == render_deploy(helm.binary), "deploy/operator.yaml is stale: run `make manifests`"


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("resources", "podSecurityContext", "securityContext"):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def test_the_chart_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), flags=re.M))
    assert set(_leaves(values)) == table, "the chart README's values table and values.yaml disagree"


def test_only_a_cluster_wide_operator_watches_nodes_for_capacity_signals(helm: Helm) -> None:  # noqa: F811
    cluster_wide = operator_rules(helm.render(), None)
    assert allows(cluster_wide, "", "nodes", "watch") and allows(cluster_wide, "", "nodes", "list")
    namespaced = operator_rules(helm.render({"watchNamespaces": ["team-a"]}), "team-a")
    assert not allows(namespaced, "", "nodes", "watch")
