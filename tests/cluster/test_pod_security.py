"""The API server's PodSecurity admission judges the pods the operator builds: with the defaults, the worker and
the rendezvous store pass the `restricted` profile; what the profile forbids is refused, so the check is real.

Server-side dry runs: admission runs in full and nothing is stored, so these take a second, not a training run
(tests/operator/test_operator_pod_security.py runs the example job in such a namespace).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dstj_api.contract import GROUP, KIND, VERSION
from dstj_operator import children
from dstj_operator.spec import DeepSeekTrainingJobSpec
from localcluster.kubectl import Kubectl
from localcluster.provisioner import CLASS

RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


def _pods(kube: Kubectl, ns: str, **spec: Any) -> list[dict[str, Any]]:
    """The worker and store pods of a job with `spec` in `ns` (its ServiceAccount created: admission needs it)."""
    spec = {"checkpoint": {"storageClass": CLASS}, **spec}
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
           "metadata": {"name": "psa", "namespace": ns, "uid": "0b9a4f0e-2f5c-4d55-9c61-5f2f6a1d2c3e"}, "spec": spec}
    model = DeepSeekTrainingJobSpec.model_validate(spec)
    account = children.worker_rbac(job)[0]
    del account["metadata"]["ownerReferences"]  # the job does not exist: the garbage collector would delete it
    kube("apply", "-f", "-", stdin=json.dumps(account))
    return [children.worker_pod(job, model, 0, "a1"), children.rendezvous_pod(job, model, "b2")]


def _dry_run(kube: Kubectl, pod: dict[str, Any]) -> tuple[int, str]:
    """Create `pod` in a server-side dry run: (kubectl's exit code, its stderr)."""
    out = kube("create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(pod), check=False)
    return out.returncode, out.stderr


def test_the_default_worker_and_store_pods_pass_the_restricted_profile(kube_nodes: Kubectl, ns: str) -> None:
    kube_nodes("label", "namespace", ns, RESTRICTED)
    for pod in _pods(kube_nodes, ns):
        code, err = _dry_run(kube_nodes, pod)
        assert code == 0, f"{pod['metadata']['name']}: {err}"


@pytest.mark.parametrize(("spec", "refusal"), [
    pytest.param({"checkpoint": {"hostPath": "/var/tmp/ckpt"}}, 'restricted volume type "hostPath"',
                 id="a-hostpath-checkpoint"),
    pytest.param({"pod": {"securityContext": {"runAsNonRoot": False, "runAsUser": 0}}}, "runAsUser=0",
                 id="root"),
    pytest.param({"pod": {"containerSecurityContext": {"allowPrivilegeEscalation": True}}},
                 "allowPrivilegeEscalation != false", id="privilege-escalation"),
    pytest.param({"pod": {"containerSecurityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}},
                 "unrestricted capabilities", id="a-user-context-replaces-drop-all"),
])
def test_what_the_restricted_profile_forbids_is_refused(
    kube_nodes: Kubectl, ns: str, spec: dict[str, Any], refusal: str,
) -> None:
    kube_nodes("label", "namespace", ns, RESTRICTED)
    worker = _pods(kube_nodes, ns, **spec)[0]
    code, err = _dry_run(kube_nodes, worker)
    assert code != 0 and "violates PodSecurity" in err and refusal in err, err
