"""Pods on process nodes: they run, log, get their env and volumes, restart, complete."""

from __future__ import annotations

import base64
import select
import subprocess
from pathlib import Path
from typing import IO

import pytest

from localcluster.kubectl import Kubectl
from tests.cluster.kobjects import (
    apply,
    condition,
    container_status,
    get,
    logs,
    phase,
    pod,
    ready,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.cluster


def test_a_pod_runs_and_its_logs_come_back_through_kubectl_logs(kube_nodes: Kubectl, ns: str) -> None:
    apply(kube_nodes, ns, pod("hello", "echo hello from $(hostname); echo second line"))

    done = wait_for(kube_nodes, "pod", "hello", ns, lambda p: phase(p) == "Succeeded", what="hello to succeed")

    assert logs(kube_nodes, ns, "hello") == "hello from hello\nsecond line\n"
    term = container_status(done)["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert done["status"]["podIP"].startswith("10.")
    assert done["status"]["startTime"]


def _signal_dir(tmp_path: Path) -> tuple[list[dict], dict]:
    """A hostPath volume at /signal through which the test tells the pod when to go on."""
    tmp_path.chmod(0o755)
    return ([{"name": "signal", "hostPath": {"path": str(tmp_path)}}],
            {"volumeMounts": [{"name": "signal", "mountPath": "/signal"}]})


def _readline(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or AssertionError after ``timeout`` seconds."""
    ready_, _, _ = select.select([stream], [], [], timeout)
    assert ready_, f"no line within {timeout} s"
    return stream.readline()


def test_kubectl_logs_follow_streams_lines_until_the_container_exits(kube_nodes: Kubectl, ns: str,
                                                                    tmp_path: Path) -> None:
    vols, mounts = _signal_dir(tmp_path)
    script = "echo first; while [ ! -e /signal/go ]; do sleep 0.05; done; echo second"
    apply(kube_nodes, ns, pod("talker", script, volumes=vols, container=mounts))
    wait_for(kube_nodes, "pod", "talker", ns, lambda p: phase(p) == "Running")
    follow = subprocess.Popen([str(kube_nodes.bin_dir / "kubectl"), f"--kubeconfig={kube_nodes.kubeconfig}",
                               "logs", "-f", "-n", ns, "talker"], stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        assert _readline(follow.stdout, 20) == "first\n"

        (tmp_path / "go").touch()

        rest, _ = follow.communicate(timeout=20)  # ends by itself once the container exits
        assert rest == "second\n"
        assert follow.returncode == 0
    finally:
        follow.kill()


def test_env_has_the_downward_api_configmap_and_secret_values(kube_nodes: Kubectl, ns: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"color": "blue"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
              "data": {"password": base64.b64encode(b"s3cret").decode()}}
    env = [{"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}} for n, f in (
        ("POD_NAME", "metadata.name"), ("POD_NS", "metadata.namespace"), ("POD_UID", "metadata.uid"),
        ("POD_IP", "status.podIP"), ("NODE", "spec.nodeName"), ("TEAM", "metadata.labels['team']"))]
    env += [{"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "GREETING", "value": "hi $(POD_NAME)"}]
    script = "for v in POD_NAME POD_NS POD_UID POD_IP NODE TEAM COLOR PASSWORD GREETING KUBERNETES_SERVICE_HOST; " \
             "do echo $v=$(printenv $v); done"
    apply(kube_nodes, ns, cm, secret, pod("envy", script, labels={"team": "moe"}, container={"env": env}))

    done = wait_for(kube_nodes, "pod", "envy", ns, lambda p: phase(p) == "Succeeded")

    seen = dict(line.split("=", 1) for line in logs(kube_nodes, ns, "envy").splitlines())
    assert seen == {"POD_NAME": "envy", "POD_NS": ns, "POD_UID": done["metadata"]["uid"],
                    "POD_IP": done["status"]["podIP"], "NODE": done["spec"]["nodeName"], "TEAM": "moe",
                    "COLOR": "blue", "PASSWORD": "s3cret", "GREETING": "hi envy",
                    "KUBERNETES_SERVICE_HOST": seen["KUBERNETES_SERVICE_HOST"]}
    assert seen["KUBERNETES_SERVICE_HOST"].endswith(".0.1")


def test_volumes_appear_at_their_mount_paths(kube_nodes: Kubectl, ns: str, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "from-host.txt").write_text("host file")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "files"}, "data": {"app.conf": "x=1"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
              "data": {"key.pem": base64.b64encode(b"KEY").decode()}}
    volumes = [{"name": "conf", "configMap": {"name": "files"}}, {"name": "keys", "secret": {"secretName": "keys"}},
               {"name": "scratch", "emptyDir": {}}, {"name": "host", "hostPath": {"path": str(host_dir)}}]
    mounts = [{"name": "conf", "mountPath": "/etc/lc-test/conf"},
              {"name": "keys", "mountPath": "/etc/lc-test/keys", "readOnly": True},
              {"name": "scratch", "mountPath": "/scratch"}, {"name": "host", "mountPath": "/data"}]
    script = ("cat /etc/lc-test/conf/app.conf; echo; cat /etc/lc-test/keys/key.pem; echo; cat /data/from-host.txt; "
              "echo; touch /etc/lc-test/keys/x 2>/dev/null && echo writable || echo read-only; "
              "echo from-writer > /scratch/shared; cp /scratch/shared /data/copied.txt")
    init = {"name": "prepare", "image": "busybox", "command": ["sh", "-c", "echo init-was-here > /scratch/init"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}
    apply(kube_nodes, ns, cm, secret, pod("vols", script + "; cat /scratch/init", volumes=volumes,
                                          initContainers=[init], container={"volumeMounts": mounts}))

    done = wait_for(kube_nodes, "pod", "vols", ns, lambda p: phase(p) in ("Succeeded", "Failed"))

    assert logs(kube_nodes, ns, "vols").splitlines() == ["x=1", "KEY", "host file", "read-only", "init-was-here"]
    assert phase(done) == "Succeeded"
    assert (host_dir / "copied.txt").read_text() == "from-writer\n"
    assert not Path("/scratch/shared").exists(), "an emptyDir must not leak into the host's file system"
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert condition(done, "Initialized")["status"] == "True"


@pytest.mark.parametrize(("policy", "expected_phase", "min_restarts"), [
    pytest.param("Never", "Failed", 0, id="Never: fails with the exit code and reason Error"),
    pytest.param("OnFailure", "Running", 1, id="OnFailure: restarts a failing container"),
])
def test_restart_policy_decides_what_happens_after_a_failure(kube_nodes: Kubectl, ns: str, policy: str,
                                                             expected_phase: str, min_restarts: int) -> None:
    apply(kube_nodes, ns, pod("crash", "echo run; exit 3", restart=policy))

    def settled(p: dict) -> bool:
        cs = container_status(p)
        return phase(p) == expected_phase and cs.get("restartCount", 0) >= min_restarts and (
            policy == "Never" or "terminated" in cs.get("lastState", {}))

    p = wait_for(kube_nodes, "pod", "crash", ns, settled, what=f"crash to be {expected_phase}")

    cs = container_status(p)
    term = cs["state"].get("terminated") or cs["lastState"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    if policy == "OnFailure":
        assert cs["state"].get("waiting", {}).get("reason") in ("CrashLoopBackOff", None)
        assert logs(kube_nodes, ns, "crash", "--previous") == "run\n"


def test_a_readiness_probe_gates_the_ready_condition(kube_nodes: Kubectl, ns: str, tmp_path: Path) -> None:
    vols, mounts = _signal_dir(tmp_path)
    probe = {"exec": {"command": ["test", "-e", "/signal/ready"]}, "periodSeconds": 1}
    apply(kube_nodes, ns, pod("probed", "sleep 60", grace=1, volumes=vols,
                              container={"readinessProbe": probe, **mounts}))
    running = wait_for(kube_nodes, "pod", "probed", ns, lambda p: container_status(p).get("started") is True)
    assert not ready(running)

    (tmp_path / "ready").touch()

    wait_for(kube_nodes, "pod", "probed", ns, ready, what="the readiness probe to pass")


def test_a_job_completes(kube_nodes: Kubectl, ns: str) -> None:
    main = {"name": "main", "image": "python:3.11", "command": ["python", "-c", "print(sum(range(10)))"]}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "count"},
           "spec": {"completions": 2, "parallelism": 2, "backoffLimit": 0,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [main]}}}}
    apply(kube_nodes, ns, job)

    done = wait_for(kube_nodes, "job", "count", ns, lambda j: condition(j, "Complete").get("status") == "True",
                    timeout=60, what="the job to complete")

    assert done["status"]["succeeded"] == 2


def test_deleting_an_owner_garbage_collects_its_pods(kube_nodes: Kubectl, ns: str) -> None:
    apply(kube_nodes, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    owner = get(kube_nodes, "configmap", "owner", ns)
    assert owner is not None
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    child = pod("child", "sleep 60", grace=1)
    child["metadata"]["ownerReferences"] = [ref]
    apply(kube_nodes, ns, child)
    wait_for(kube_nodes, "pod", "child", ns, lambda p: phase(p) == "Running")

    kube_nodes("delete", "configmap", "owner", "-n", ns)

    wait_gone(kube_nodes, "pod", "child", ns)


def test_an_unschedulable_pod_stays_pending_with_the_schedulers_reason(kube_nodes: Kubectl, ns: str) -> None:
    big = pod("huge", "true", container={"resources": {"requests": {"cpu": "1000"}}})
    apply(kube_nodes, ns, big)

    p = wait_for(kube_nodes, "pod", "huge", ns, lambda p: condition(p, "PodScheduled").get("reason") == "Unschedulable",
                 what="the scheduler to give up on huge")

    assert phase(p) == "Pending"
    assert "Insufficient cpu" in condition(p, "PodScheduled")["message"]


@pytest.mark.parametrize(("script", "policy", "message"), [
    pytest.param('echo "checkpoint.url: install s3fs" > "$DSTJ_TERMINATION_LOG"; echo noise; exit 78', "File",
                 "checkpoint.url: install s3fs\n", id="the file the container wrote"),
    pytest.param("echo first; echo last words; exit 1", "FallbackToLogsOnError", "first\nlast words\n",
                 id="the log's tail when the file is empty and the policy falls back"),
])
def test_a_containers_termination_message_reaches_the_pod_status(kube_nodes: Kubectl, ns: str, script: str,
                                                                 policy: str, message: str) -> None:
    apply(kube_nodes, ns, pod("ended", script, container={"terminationMessagePolicy": policy}))

    done = wait_for(kube_nodes, "pod", "ended", ns, lambda p: phase(p) == "Failed", what="ended to fail")

    term = container_status(done)["state"]["terminated"]
    assert term["message"] == message
