"""Membership, progress and the current trainer config through the Kubernetes API, for workers in pods.

The membership is `.status.membership` of the worker's own DeepSeekTrainingJob, followed by a
watch in a background thread (cheap for the API server, and a new generation is seen at once).
The progress report goes into the job's `<job>-progress` ConfigMap, the one object the job's
ServiceAccount may write. The trainer config is read from `<job>-config` when a generation names another
config than the one a worker runs (`config_source.py`). Spec strings: `k8s:NAMESPACE/NAME`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, cast

from pydantic import ValidationError

from dstj_api import Membership, ProgressReport, read_lenient
from dstj_api.contract import CONFIG_KEY, GROUP, PLURAL, PROGRESS_KEY, VERSION

log = logging.getLogger(__name__)


def _load_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG once, at import; read it now so a later setting counts.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


def parse_ref(spec: str) -> tuple[str, str]:
    """`k8s:NAMESPACE/NAME` -> (namespace, name), with an error that says the expected form."""
    ref = spec.removeprefix("k8s:")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"{spec!r}: expected k8s:NAMESPACE/NAME")
    return namespace, name


def membership_of(job: dict[str, Any]) -> Membership | None:
    """The membership a job object publishes, or None while it has none (or an invalid one).

    Read leniently: a newer operator's extra field must not unseat this worker."""
    raw = (job.get("status") or {}).get("membership")
    if not raw:
        return None
    try:
        return read_lenient(Membership, raw, "the job's membership")
    except ValidationError as e:
        log.warning("ignoring an invalid membership in the job status: %s", e)
        return None


REQUEST_TIMEOUT_S = (5.0, 10.0)
"""Connect and read timeouts of a worker's reads and writes: a connection that hangs must not hold it for ever."""
WATCH_SECONDS = 300
"""How long the API server keeps the membership watch open; nothing at all for 30 s more means the connection
is dead, and the watch is made again."""


class JobStatusMembershipSource:
    """The published membership of one job, kept current by a watch from the first read on.

    The client (its import is a good part of a worker's start) is loaded at the first read, which a worker makes
    once it is ready to join: the operator publishes a generation for it only after that."""

    def __init__(self, spec: str) -> None:
        self.namespace, self.name = parse_ref(spec)
        self._api: Any = None
        self._latest: Membership | None = None
        self._lock = threading.Lock()

    def _connect(self) -> None:
        from kubernetes import client

        _load_config()
        self._api = client.CustomObjectsApi()
        self._refresh()
        threading.Thread(target=self._follow, name="membership-watch", daemon=True).start()

    def _set(self, job: dict[str, Any]) -> None:
        with self._lock:
            self._latest = membership_of(job)

    def _refresh(self) -> None:
        try:
            job = self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                         _request_timeout=REQUEST_TIMEOUT_S)
            self._set(cast(dict[str, Any], job))
        except Exception as e:  # the API may be briefly unreachable; the watch retries
            log.warning("reading the job's membership failed: %s", e)

    def _follow(self) -> None:
        from kubernetes import watch

        while True:
            try:
                stream = watch.Watch().stream(
                    self._api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                    field_selector=f"metadata.name={self.name}", timeout_seconds=WATCH_SECONDS,
                    _request_timeout=(REQUEST_TIMEOUT_S[0], WATCH_SECONDS + 30),
                )
                for event in stream:
                    self._set(event["object"])
            except Exception as e:  # reconnect after any watch failure
                log.warning("membership watch ended (%s); reconnecting", e)
                time.sleep(1)
            self._refresh()

    def current(self) -> Membership | None:
        """The membership last seen (the first call reads it and starts the watch)."""
        if self._api is None:
            self._connect()
        with self._lock:
            return self._latest


class ConfigMapProgressSink:
    """Writes the progress report into the job's progress ConfigMap."""

    def __init__(self, spec: str) -> None:
        from kubernetes import client

        self.namespace, self.name = parse_ref(spec)
        _load_config()
        self._api = client.CoreV1Api()

    def publish(self, report: ProgressReport) -> None:
        """Replace the report; a failed write is logged, never fatal to training."""
        body = {"data": {PROGRESS_KEY: json.dumps(report.model_dump(mode="json", by_alias=True))}}
        try:
            self._api.patch_namespaced_config_map(self.name, self.namespace, body,
                                                  _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as e:  # progress is best effort; training goes on
            log.warning("writing the progress report failed: %s", e)


class ConfigMapConfigSource:
    """The job's trainer config, read from its ConfigMap through the API (the worker's Role may get it); the client
    is loaded at the first read (only an edited job's workers make one)."""

    def __init__(self, spec: str) -> None:
        self.namespace, self.name = parse_ref(spec)
        self._api: Any = None

    def read(self) -> str | None:
        """The config's JSON text, or None while it cannot be read (the caller reads again)."""
        if self._api is None:
            from kubernetes import client

            _load_config()
            self._api = client.CoreV1Api()
        try:
            cm = self._api.read_namespaced_config_map(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT_S)
        except Exception as e:  # the API may be briefly unreachable
            log.warning("reading the trainer config failed: %s", e)
            return None
        text: str | None = (cm.data or {}).get(CONFIG_KEY)
        return text
