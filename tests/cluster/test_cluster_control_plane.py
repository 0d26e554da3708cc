"""The local control plane behaves like a real Kubernetes: API, RBAC identities, GC, CEL."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from localcluster import build, kubeconfig, pki
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until

pytestmark = pytest.mark.cluster

K8S_VERSION = "v1.37.2"


def _name(prefix: str) -> str:
    """A unique object name, so reruns against a reused cluster never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_cached_build_returns_in_well_under_a_second(bin_dir: Path) -> None:
    start = time.monotonic()
    assert build.bin_dir() == bin_dir
    assert time.monotonic() - start < 1.0


def test_the_api_server_answers_and_kubectl_lists_namespaces(kube: Kubectl) -> None:
    names = kube("get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system", "namespace/kube-public"} <= set(names)


def test_kubectl_reports_the_pinned_server_version_not_v0(kube: Kubectl) -> None:
    versions = json.loads(kube("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION


def test_deleting_an_owner_garbage_collects_its_child(kube: Kubectl) -> None:
    owner, child = _name("owner"), _name("child")
    kube("create", "configmap", owner, "--from-literal=role=owner")
    uid = kube("get", "configmap", owner, "-o", "jsonpath={.metadata.uid}").stdout
    manifest = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": child, "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}]},
        "data": {"role": "child"},
    }
    kube("apply", "-f", "-", stdin=json.dumps(manifest))

    kube("delete", "configmap", owner, "--wait=true")

    def child_gone() -> bool:
        res = kube("get", "configmap", child, check=False)
        return res.returncode != 0 and "NotFound" in res.stderr

    wait_until(child_gone, timeout=30, what=f"the garbage collector to delete configmap {child}")


CRD_GROUP = "lc-test.dstj.dev"


def _crd() -> dict[str, object]:
    """A CRD whose schema holds a CEL rule across two fields, as our job CRD does."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP, "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object", "required": ["min", "max"],
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                    "x-kubernetes-validations": [
                        {"rule": "self.min <= self.max", "message": "min must not exceed max"}],
                }},
            }}}],
        },
    }


def test_a_crd_cel_rule_refuses_a_bad_object_with_its_message(kube: Kubectl) -> None:
    kube("apply", "-f", "-", stdin=json.dumps(_crd()))
    kube("wait", "--for=condition=Established", f"crd/ranges.{CRD_GROUP}", "--timeout=30s")

    def obj(name: str, lo: int, hi: int) -> str:
        return json.dumps({"apiVersion": f"{CRD_GROUP}/v1", "kind": "Range", "metadata": {"name": name},
                           "spec": {"min": lo, "max": hi}})

    good, bad = _name("good"), _name("bad")
    # Discovery of a fresh CRD can lag a moment behind Established: retry until it is served.
    wait_until(lambda: kube("apply", "-f", "-", stdin=obj(good, 1, 2), check=False).returncode == 0,
               timeout=30, what="a valid Range to be accepted")

    refused = kube("apply", "-f", "-", stdin=obj(bad, 3, 2), check=False)

    assert refused.returncode != 0
    assert "min must not exceed max" in refused.stderr
    assert "spec" in refused.stderr  # the message names the field path
    kube("delete", "range", good)


def test_a_token_from_the_token_request_api_authenticates_as_its_service_account(kube: Kubectl) -> None:
    token = kube("create", "token", "default", "--duration=10m").stdout.strip()
    server = kube("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout

    ca = kube.kubeconfig.parent / "pki" / "ca.crt"
    # An empty kubeconfig: the token is the only credential presented.
    anonymous = Kubectl(Path("/dev/null"), kube.bin_dir)

    who = anonymous("--server", server, f"--certificate-authority={ca}", "--token", token,
                    "auth", "whoami", "-o", "json")

    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "system:serviceaccount:default:default"


def test_a_node_client_certificate_authenticates_as_that_node(kube: Kubectl, tmp_path: Path) -> None:
    pki_dir = kube.kubeconfig.parent / "pki"
    server = kube("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    node = _name("node")
    kc = kubeconfig.write(tmp_path / "node.kubeconfig", server, pki_dir / "ca.crt",
                          pki.node_client(pki_dir, node), f"system:node:{node}")
    as_node = Kubectl(kc, kube.bin_dir)

    info = json.loads(as_node("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]

    assert info["username"] == f"system:node:{node}"
    assert "system:nodes" in info["groups"]
    # The Node authorizer limits a node to its own objects: secrets at large are refused.
    assert as_node("auth", "can-i", "list", "secrets", "-A", check=False).stdout.startswith("no")
