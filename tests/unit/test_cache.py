"""The read layer as data: what a pass wrote is read by the next one whatever the watch delivered by then,
an older version never replaces a newer one, a relisting drops what went missing, and a slim pod tells the
operator everything the full one does."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
import urllib3

from dstj_api.contract import (
    GROUP,
    INDEX_LABEL,
    JOB_LABEL,
    KIND,
    PLURAL,
    PROGRESS_KEY,
    ROLE_LABEL,
    TEMPLATE_ANNOTATION,
    VERSION,
)
from dstj_operator import cache, children, cluster
from dstj_operator.cache import UNKNOWN, Store
from dstj_operator.decide import classify_end, observe

NS = "team"


def pod(name: str, rv: int, *, index: int = 0, uid: str | None = None, role: str = "worker", job: str = "moe",
        **status: Any) -> dict[str, Any]:
    """A worker pod as the API server sends it (with the fields the store drops)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": uid or f"uid-{name}", "resourceVersion": str(rv),
                         "labels": {JOB_LABEL: job, ROLE_LABEL: role, INDEX_LABEL: str(index)},
                         "annotations": {TEMPLATE_ANNOTATION: "t1"}, "creationTimestamp": "2026-12-02T20:00:00Z",
                         "managedFields": [{"manager": "kube-scheduler", "fieldsV1": {"f:status": {}}}],
                         "ownerReferences": [{"uid": "job-uid"}]},
            "spec": {"nodeName": "fake-0", "containers": [{"name": "trainer", "image": "moe-trainer:1",
                                                           "env": [{"name": "A", "value": "1"}] * 8,
                                                           "ports": [{"containerPort": 29400}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                                                           "lastProbeTime": None}], **status}}


def listed(store: Store, plural: str, *objects: dict[str, Any], version: str | None = None) -> None:
    """A stream's initial listing of `objects`, taken at resourceVersion `version`."""
    store.opening(plural, None)
    for obj in objects:
        store.event(plural, None, {"type": None, "object": obj})
    store.listed(plural, None, version)


def names(store: Store) -> list[str]:
    held = store.pods(NS, "moe")
    assert held is not UNKNOWN
    return sorted(p["metadata"]["name"] for p in held)


def test_nothing_is_known_before_the_listing_nor_after_the_stream_ends() -> None:
    store = Store()
    assert store.pods(NS, "moe") is UNKNOWN and store.job(NS, "moe") is UNKNOWN
    listed(store, "pods", pod("w0", 5))
    assert names(store) == ["w0"]
    store.ended("pods", None)
    assert store.pods(NS, "moe") is UNKNOWN


def test_a_pod_a_pass_created_is_read_by_the_next_pass_before_its_watch_event_arrives() -> None:
    store = Store()
    listed(store, "pods")
    store.wrote(pod("w0-a", 10))  # the create call's answer
    assert names(store) == ["w0-a"]  # the next pass sees index 0 taken: no second worker for it
    store.event("pods", None, {"type": "ADDED", "object": pod("w0-a", 10)})
    store.event("pods", None, {"type": "MODIFIED", "object": pod("w0-a", 12, phase="Running")})
    assert names(store) == ["w0-a"]


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = Store()
    listed(store, "pods")
    store.event("pods", None, {"type": "MODIFIED", "object": pod("w0", 20)})
    store.wrote(pod("w0", 15, phase="Pending"))  # a pass's answer that the watch has already overtaken
    held = store.pods(NS, "moe")
    assert held is not UNKNOWN and held[0]["metadata"]["resourceVersion"] == "20"


def test_a_pod_a_pass_deleted_stays_terminating_until_its_deletion_event() -> None:
    store = Store()
    listed(store, "pods", pod("w0", 5))
    terminating = pod("w0", 7)
    terminating["metadata"]["deletionTimestamp"] = "2026-12-02T20:01:00Z"
    store.deleting(terminating)  # the delete call's answer
    store.event("pods", None, {"type": "MODIFIED", "object": pod("w0", 5)})  # late: the version before
    held = store.pods(NS, "moe")
    assert held is not UNKNOWN and observe(held[0], INDEX_LABEL).terminating  # never deleted twice
    store.event("pods", None, {"type": "DELETED", "object": pod("w0", 8)})
    assert names(store) == []


def test_a_pod_deleted_before_its_create_answer_is_written_through_stays_gone() -> None:
    store = Store()
    listed(store, "pods")
    store.event("pods", None, {"type": "ADDED", "object": pod("w0-a", 10)})
    store.event("pods", None, {"type": "DELETED", "object": pod("w0-a", 11)})
    store.wrote(pod("w0-a", 10))
    terminating = pod("w0-a", 10)
    terminating["metadata"]["deletionTimestamp"] = "2026-12-02T20:01:00Z"
    store.deleting(terminating)
    assert names(store) == []


def test_a_pod_deleted_at_once_is_dropped_and_not_brought_back() -> None:
    store = Store()
    listed(store, "pods", pod("w0", 5))
    store.gone(NS, "w0")
    store.wrote(pod("w0", 5))
    assert names(store) == []


def test_a_relisting_drops_pods_deleted_while_the_stream_was_down_but_keeps_one_a_pass_created_after_it() -> None:
    store = Store()
    listed(store, "pods", pod("w0", 5), pod("w1", 6, index=1), version="6")
    store.ended("pods", None)
    store.opening("pods", None)
    store.event("pods", None, {"type": None, "object": pod("w0", 5)})  # w1 went while no stream ran
    store.wrote(pod("w1-new", 30, index=1))  # created by a pass after the listing was taken: the watch brings it
    store.listed("pods", None, "20")
    assert names(store) == ["w0", "w1-new"]


def test_a_pod_a_pass_created_while_the_stream_relisted_and_that_went_before_the_listing_was_taken_is_dropped() -> None:
    # The API server restarted: the pods stream relists (its listing retried under 429s for seconds) while passes
    # read the API server and create; the preemptor deletes the new pod before the listing is taken, so neither
    # the listing nor the watch that starts after it ever shows that pod again. Kept, it held index 1 forever:
    # the job stayed at one worker, and no event came to say otherwise.
    store = Store()
    listed(store, "pods", pod("w0", 5), pod("w1", 6, index=1), version="6")
    store.ended("pods", None)
    store.opening("pods", None)
    store.wrote(pod("w1-a", 25, index=1, phase="Pending"))  # a pass's create, answered while the stream relists
    store.event("pods", None, {"type": None, "object": pod("w0", 5)})  # w1 and w1-a were deleted before RV 28
    store.listed("pods", None, "28")
    assert names(store) == ["w0"]
    store.wrote(pod("w1-a", 25, index=1, phase="Pending"))  # the same answer, late: it does not come back
    assert names(store) == ["w0"]
    store.wrote(pod("w1-b", 31, index=1, phase="Pending"))  # the replacement, created after the listing
    assert names(store) == ["w0", "w1-b"]


def test_a_relisting_without_its_version_is_the_whole_truth() -> None:
    store = Store()
    listed(store, "pods", pod("w0", 5))
    store.opening("pods", None)
    store.wrote(pod("w1-a", 25, index=1))
    store.listed("pods", None, None)
    assert names(store) == []


def test_pods_are_indexed_by_job() -> None:
    store = Store()
    listed(store, "pods", pod("a-0", 5, job="a"), pod("b-0", 6, job="b"), pod("b-r", 7, job="b", role="rendezvous"))
    assert [p["metadata"]["name"] for p in store.pods(NS, "b")] == ["b-0", "b-r"]  # type: ignore[union-attr]
    assert store.pods(NS, "c") == []


def test_a_job_is_read_as_its_status_write_answered_and_without_managed_fields() -> None:
    store = Store()
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
           "metadata": {"name": "moe", "namespace": NS, "uid": "u", "resourceVersion": "40", "managedFields": [{}]},
           "spec": {}, "status": {"membership": {"generation": 1}}}
    listed(store, PLURAL, job)
    written = {**job, "metadata": {**job["metadata"], "resourceVersion": "41"}, "status": {"membership": {
        "generation": 2}}}
    store.wrote(written)
    store.event(PLURAL, None, {"type": "MODIFIED", "object": job})  # an event older than the write
    held = store.job(NS, "moe")
    assert isinstance(held, dict) and held["status"]["membership"]["generation"] == 2
    assert "managedFields" not in held["metadata"]
    store.event(PLURAL, None, {"type": "DELETED", "object": written})
    assert store.job(NS, "moe") is None


def test_the_progress_report_is_read_from_the_progress_configmap_only() -> None:
    store = Store()
    report = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "moe-progress", "namespace": NS, "uid": "p", "resourceVersion": "3",
                           "labels": {JOB_LABEL: "moe", ROLE_LABEL: "progress"}}, "data": {PROGRESS_KEY: '{"step": 4}'}}
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "moe-config", "namespace": NS, "uid": "c", "resourceVersion": "2",
                           "labels": {JOB_LABEL: "moe", ROLE_LABEL: "config"}}, "data": {"config.json": "{}"}}
    listed(store, "configmaps", report, config)
    assert store.progress(NS, "moe-progress") == '{"step": 4}'
    assert store.progress(NS, "moe-config") is None


END_STATES = [
    pytest.param({}, id="running-and-ready"),
    pytest.param({"phase": "Failed", "reason": "Evicted"}, id="evicted"),
    pytest.param({"phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "x", "restartCount": 0,
                                                            "state": {"terminated": {"exitCode": 1, "reason": "Error",
                                                                                     "message": "boom"}}}]},
                 id="crashed"),
    pytest.param({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                      "reason": "Unschedulable", "message": "0/3 nodes",
                                                      "lastTransitionTime": "2026-12-02T20:00:00Z"}]},
                 id="unschedulable"),
    pytest.param({"phase": "Pending", "containerStatuses": [{"name": "trainer", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": "no such image"}}}], "nominatedNodeName": "n2"},
                 id="stuck-pulling"),
    pytest.param({"phase": "Pending", "initContainerStatuses": [{"name": "checkpoint-owner", "state": {"waiting": {
        "reason": "ErrImagePull", "message": "no such image"}}}]},
                 id="stuck-pulling-in-an-init-container"),
    pytest.param({"conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "True"}]},
                 id="node-lost"),
]


@pytest.mark.parametrize("status", END_STATES)
def test_a_slim_pod_tells_the_operator_what_the_full_pod_does(status: dict[str, Any]) -> None:
    full = pod("w3", 9, index=3, **status)
    slim = cache.slim_pod(full)
    assert observe(slim, INDEX_LABEL, TEMPLATE_ANNOTATION) == observe(full, INDEX_LABEL, TEMPLATE_ANNOTATION)
    assert classify_end(slim) == classify_end(full)
    assert children.rendezvous_port(slim) == children.rendezvous_port(full)
    assert "managedFields" not in slim["metadata"] and "env" not in slim["spec"]["containers"][0]


def test_kopf_gets_a_pod_slimmed_with_what_the_handlers_read_and_other_objects_without_managed_fields() -> None:
    full = pod("w3", 9, index=3)
    handed = cache.handed_to_kopf("pods", {"type": "DELETED", "object": full})["object"]
    assert handed["kind"] == "Pod" and handed["spec"]["nodeName"] == "fake-0"  # `handlers.child_event` reads these
    assert handed["metadata"]["labels"] == full["metadata"]["labels"]
    assert "managedFields" not in handed["metadata"] and "env" not in handed["spec"]["containers"][0]
    config = {"kind": "ConfigMap", "metadata": {"name": "c", "managedFields": [{}]}, "data": {"a": "1"}}
    assert cache.handed_to_kopf("configmaps", {"type": "ADDED", "object": config}) == {
        "type": "ADDED", "object": {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}}
    assert "managedFields" in config["metadata"]  # the stream's own object is not changed


class NoApi(cluster.Cluster):
    """A cluster whose API server must not be asked."""

    def __init__(self) -> None:
        super().__init__(core=None, apis=None)


def test_a_pass_reads_a_jobs_pods_by_role_from_the_store_without_asking_the_api_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    monkeypatch.setattr(cache, "STORE", store)
    listed(store, "pods", pod("moe-worker-0", 5), pod("moe-rdzv", 6, role="rendezvous"), pod("x-worker-0", 7, job="x"))
    workers = NoApi().pods(NS, f"{JOB_LABEL}=moe,{ROLE_LABEL}=worker")
    assert [p["metadata"]["name"] for p in workers] == ["moe-worker-0"]
    assert len(NoApi().pods(NS, f"{JOB_LABEL}=moe")) == 2


class RestartingApi(cluster.Cluster):
    """An API server that creates a pod and then drops the connection before answering (it was SIGKILLed)."""

    def __init__(self, *held: dict[str, Any]) -> None:
        super().__init__(core=self, apis=None)
        self.held = list(held)
        self.lists = 0

    def create_namespaced_pod(self, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        self.held.append(body)
        raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))

    def list_namespaced_pod(self, namespace: str, label_selector: str, **_: Any) -> Any:
        self.lists += 1
        job = label_selector.removeprefix(f"{JOB_LABEL}=")
        items = [{k: v for k, v in p.items() if k != "kind"} for p in self.held
                 if p["metadata"]["labels"][JOB_LABEL] == job]
        return types.SimpleNamespace(data=json.dumps({"items": items}))


def test_a_pod_whose_create_went_unanswered_is_read_from_the_api_server_so_its_index_is_not_created_twice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The API server is killed while a pass creates index 1: the pod exists, the pass got no answer, and the pods
    # stream, retrying its watch, still counts as listed. Read from the store, the retry saw index 1 missing.
    store = Store()
    monkeypatch.setattr(cache, "STORE", store)
    listed(store, "pods", pod("moe-worker-0", 5))
    api = RestartingApi(pod("moe-worker-0", 5))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        api.create_if_absent(pod("moe-worker-1-a", 9, index=1))
    workers = api.pods(NS, f"{JOB_LABEL}=moe,{ROLE_LABEL}=worker")  # the retry's read: from the API server
    assert sorted(p["metadata"]["name"] for p in workers) == ["moe-worker-0", "moe-worker-1-a"]
    assert names(store) == ["moe-worker-0", "moe-worker-1-a"] and api.lists == 1  # known again: from the store
