"""The client's API modules the passes use are imported when the operator starts, not in its first pass."""

from __future__ import annotations

import sys

from kubernetes import client

from dstj_operator import cluster


def test_every_api_class_a_pass_calls_is_preloaded() -> None:
    applied = {cls for cls, _ in cluster._APPLY_CALLS.values()}
    assert applied <= set(cluster.API_CLASSES)
    cluster.preload_clients()
    for name in cluster.API_CLASSES:
        assert getattr(client, name).__module__ in sys.modules
