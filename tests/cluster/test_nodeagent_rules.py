"""The node agent's pure rules, without a cluster: names, env, images, restarts, Service records."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.nodeagent import envvars, hosts, images, termination, termlog
from localcluster.nodeagent.status import Slot
from localcluster.state import Network


def _pod(**spec: object) -> dict:
    return {"metadata": {"name": "worker-0", "namespace": "ml", "uid": "u1", "labels": {"team": "moe"}},
            "spec": {"nodeName": "node-1", "containers": [], **spec}}


def test_a_pod_hostname_resolves_to_its_own_ip_with_and_without_a_subdomain() -> None:
    plain = hosts.own_entries(_pod(), "10.244.1.2", "10.244.0.1")
    sub = hosts.own_entries(_pod(hostname="w0", subdomain="peers"), "10.244.1.3", "10.244.0.1")

    assert "10.244.1.2\tworker-0\n" in plain
    assert "10.244.1.3\tw0.peers.ml.svc.cluster.local\tw0\n" in sub
    assert "10.244.0.1\tkubernetes kubernetes.default" in plain


def test_only_ready_endpoints_of_headless_services_get_records() -> None:
    records = hosts.ServiceRecords()
    labels = {"kubernetes.io/service-name": "rdzv", hosts.HEADLESS_LABEL: ""}
    eps = [{"addresses": ["10.244.1.2"], "hostname": "w0", "conditions": {"ready": True}},
           {"addresses": ["10.244.2.2"], "conditions": {"ready": False}}]
    records.apply("ADDED", {"metadata": {"name": "rdzv-x", "namespace": "ml", "labels": labels}, "endpoints": eps})
    records.apply("ADDED", {"metadata": {"name": "web-y", "namespace": "ml",
                                         "labels": {"kubernetes.io/service-name": "web"}}, "endpoints": eps})

    text = records.entries("ml")

    assert "10.244.1.2\trdzv rdzv.ml rdzv.ml.svc rdzv.ml.svc.cluster.local\n" in text
    assert "w0.rdzv.ml.svc.cluster.local" in text
    assert "10.244.2.2" not in text and "web" not in text


def test_env_expands_earlier_variables_and_keeps_escapes() -> None:
    assert envvars.expand("$(A)-$$(A)-$(MISSING)", {"A": "x"}) == "x-$(A)-$(MISSING)"


def test_downward_api_fields_resolve_against_the_pod() -> None:
    pod = _pod()
    assert envvars.field_value(pod, "metadata.labels['team']", "10.0.0.2") == "moe"
    assert envvars.field_value(pod, "status.podIP", "10.0.0.2") == "10.0.0.2"
    with pytest.raises(envvars.EnvError):
        envvars.field_value(pod, "spec.nope", "")


@pytest.mark.parametrize(("image", "command", "args", "argv"), [
    pytest.param("busybox", ["echo"], ["hi"], ["echo", "hi"], id="a command runs as given"),
    pytest.param("registry:5000/org/moe-trainer:v1", None, ["--x"], ["python", "-m", "moe_trainer.launch", "--x"],
                 id="no command: the image's entry point, registry and tag ignored"),
])
def test_the_image_decides_the_entry_point_only_without_a_command(image: str, command: list[str] | None,
                                                                   args: list[str], argv: list[str]) -> None:
    assert images.argv(image, command, args) == argv


def test_an_image_process_nodes_do_not_have_cannot_be_pulled_with_or_without_a_command() -> None:
    for command in (None, ["sh"]):
        with pytest.raises(images.ImageNotFound, match=r"failed to pull image 'ghcr.io/x/unknown:1': not found"):
            images.argv("ghcr.io/x/unknown:1", command, None)


@pytest.mark.parametrize(("init", "policy", "code", "restart"), [
    (False, "Always", 0, True), (False, "OnFailure", 0, False), (False, "OnFailure", 1, True),
    (False, "Never", 1, False), (True, "Always", 0, False), (True, "Always", 2, True), (True, "Never", 2, False),
])
def test_restart_policy(init: bool, policy: str, code: int, restart: bool) -> None:
    assert termination.should_restart(Slot({"name": "c"}, init), policy, code) is restart


def test_the_grace_period_is_the_deletions_and_short_when_force_deleted() -> None:
    pod = {"metadata": {"deletionGracePeriodSeconds": 7}, "spec": {"terminationGracePeriodSeconds": 30}}
    assert termination.grace_period(pod, removed=False) == 7
    assert termination.grace_period(pod, removed=True) == 2


def test_node_k_owns_its_own_slash_24_of_the_pod_network() -> None:
    net = Network(cidr="10.245.0.0/16", bridge="lc-x")
    assert (net.bridge_ip, net.node_ip(3)) == ("10.245.0.1", "10.245.3.1")
    assert net.pod_ips(3)[0] == "10.245.3.2" and net.pod_ips(3)[-1] == "10.245.3.254"


def test_a_termination_message_is_the_file_the_container_wrote_cut_at_4096_bytes(tmp_path: Path) -> None:
    msg, log = termlog.path(tmp_path, "main", 0), tmp_path / "0.log"
    termlog.prepare(msg)
    log.write_text("a log line\n")
    assert termlog.read(msg, log, fallback_to_logs=True, exit_code=1) == "a log line\n"  # empty file: the log
    msg.write_text("x" * 5000)
    assert termlog.read(msg, log, fallback_to_logs=True, exit_code=1) == "x" * 4096


@pytest.mark.parametrize(("fallback", "code"), [
    pytest.param(False, 1, id="policy File never reads the log"),
    pytest.param(True, 0, id="FallbackToLogsOnError reads the log only after a failure"),
])
def test_an_empty_termination_message_stays_empty_unless_the_policy_falls_back(
        tmp_path: Path, fallback: bool, code: int) -> None:
    msg, log = termlog.path(tmp_path, "main", 0), tmp_path / "0.log"
    termlog.prepare(msg)
    log.write_text("a log line\n")
    assert termlog.read(msg, log, fallback_to_logs=fallback, exit_code=code) == ""


def test_the_log_stands_in_with_its_last_80_lines_and_at_most_2048_bytes(tmp_path: Path) -> None:
    msg, log = termlog.path(tmp_path, "main", 0), tmp_path / "0.log"
    termlog.prepare(msg)
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert termlog.read(msg, log, fallback_to_logs=True, exit_code=2).splitlines() == [
        f"line {i}" for i in range(20, 100)]
    log.write_text("y" * 3000 + "\n")
    assert termlog.read(msg, log, fallback_to_logs=True, exit_code=2) == "y" * 2047 + "\n"
