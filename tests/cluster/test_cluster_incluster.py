"""In-cluster clients in pods: the projected token authenticates with its ServiceAccount's RBAC."""

from __future__ import annotations

import json

import pytest

from localcluster.kubectl import Kubectl
from tests.cluster.kobjects import apply, logs, phase, pod, wait_for

pytestmark = pytest.mark.cluster

SCRIPT = """
import json, os
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
config.load_incluster_config()  # reads /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}
ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
v1 = client.CoreV1Api()
out = {"namespace": ns, "configmaps": sorted(c.metadata.name for c in v1.list_namespaced_config_map(ns).items)}
try:
    v1.list_namespaced_secret(ns)
    out["secrets"] = "allowed"
except ApiException as e:
    out["secrets"] = e.status
review = client.AuthenticationV1Api().create_self_subject_review(
    client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
out["user"] = review.status.user_info.username
print(json.dumps(out))
"""


def test_a_projected_token_gives_a_pod_exactly_its_service_accounts_rights(kube_nodes: Kubectl, ns: str) -> None:
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "visible"}, "data": {"k": "v"}}
    client_pod = pod("reader", "", image="python:3.11", serviceAccountName="reader",
                     container={"command": ["python", "-c", SCRIPT]})
    apply(kube_nodes, ns, sa, role, binding, cm, client_pod)

    done = wait_for(kube_nodes, "pod", "reader", ns, lambda p: phase(p) in ("Succeeded", "Failed"), timeout=60)

    out = logs(kube_nodes, ns, "reader")
    assert phase(done) == "Succeeded", out
    seen = json.loads(out.splitlines()[-1])
    assert seen["namespace"] == ns
    assert "visible" in seen["configmaps"] and "kube-root-ca.crt" in seen["configmaps"]
    assert seen["secrets"] == 403, "RBAC must refuse what the Role does not grant"
    assert seen["user"] == f"system:serviceaccount:{ns}:reader"
