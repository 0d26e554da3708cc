"""Children as data: their hash, and whether a live child matches what the operator built."""

from __future__ import annotations

from dstj_operator.converge import HASH_ANNOTATION, contains, hash_of, matches, replacement, spec_hash, stamped

SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "j-rdzv", "namespace": "ns", "labels": {"role": "rendezvous"},
                        "ownerReferences": [{"uid": "u"}]},
           "spec": {"clusterIP": "None", "ports": [{"name": "c10d", "port": 29400}]}}


def test_the_hash_follows_the_content_not_the_name_or_the_hash_itself() -> None:
    renamed = {**SERVICE, "metadata": {**SERVICE["metadata"], "name": "j-rdzv-a1b2c3"}}
    assert spec_hash(renamed) == spec_hash(SERVICE) == spec_hash(stamped(SERVICE))
    moved = {**SERVICE, "spec": {**SERVICE["spec"], "ports": [{"name": "c10d", "port": 29500}]}}
    assert spec_hash(moved) != spec_hash(SERVICE)
    assert stamped(SERVICE)["metadata"]["annotations"][HASH_ANNOTATION] == spec_hash(SERVICE)


def test_the_hash_of_a_live_child_is_its_annotation() -> None:
    assert hash_of(stamped(SERVICE)) == spec_hash(SERVICE)
    assert hash_of(SERVICE) is None  # built by an older operator, or by hand


def test_server_defaults_do_not_count_as_a_difference_but_a_hand_edit_does() -> None:
    live = {**stamped(SERVICE), "spec": {"clusterIP": "None", "clusterIPs": ["None"], "sessionAffinity": "None",
                                         "ports": [{"name": "c10d", "port": 29400, "protocol": "TCP",
                                                    "targetPort": 29400}]}}
    assert matches(live, stamped(SERVICE))
    edited = {**live, "spec": {**live["spec"], "ports": [live["spec"]["ports"][0], {"name": "x", "port": 1}]}}
    assert not matches(edited, stamped(SERVICE))
    relabelled = {**live, "metadata": {**live["metadata"], "labels": {"role": "other"}}}
    assert not matches(relabelled, stamped(SERVICE))


def test_a_replacement_keeps_what_others_added_and_what_the_server_keeps() -> None:
    live = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "j-rdzv", "namespace": "ns", "resourceVersion": "7", "labels": {"team": "a"},
                         "finalizers": ["x"], "managedFields": [{}]},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 1234}]}}
    body = replacement(live, stamped(SERVICE))
    assert body["metadata"]["resourceVersion"] == "7" and body["metadata"]["finalizers"] == ["x"]
    assert body["metadata"]["labels"] == {"team": "a", "role": "rendezvous"} and "managedFields" not in body["metadata"]
    assert body["spec"] == {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "c10d", "port": 29400}]}


def test_lists_must_match_item_by_item() -> None:
    assert contains([{"a": 1, "b": 2}], [{"a": 1}])
    assert not contains([{"a": 1}, {"a": 2}], [{"a": 1}])
