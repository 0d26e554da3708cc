"""Leader election over a coordination.k8s.io Lease, so a standby replica takes over a dead leader.

kopf's own peering freezes peers of equal priority rather than electing one, so replicas > 1 use
this instead: only the holder of the Lease runs kopf; the others wait in `acquire`. Expiry is
judged by how long the Lease record has stayed unchanged as seen by this process (as client-go
does), so clocks of different nodes never need to agree. A leader that cannot renew within the
lease duration exits at once (the pod restarts as a standby): two leaders must never write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from dstj_operator import metrics

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    """Acquire, renew and release one Lease."""

    def __init__(self, name: str, namespace: str, identity: str, lease_seconds: int,
                 api: Any | None = None) -> None:
        self.name, self.namespace, self.identity, self.lease_seconds = name, namespace, identity, lease_seconds
        self.api: Any = api or client.CoordinationV1Api()
        self._seen: tuple[str | None, float] = (None, 0.0)
        """(resourceVersion of the Lease last seen, monotonic time it was first seen)."""
        self._stop = threading.Event()
        self.leading = False
        """True from `acquire`'s return until the Lease is lost or released."""
        self.last_read: float | None = None
        """Monotonic time of the last successful read (or creation) of the Lease: a standby's readiness."""

    def _body(self, acquire_time: datetime | None, transitions: int) -> Any:
        now = _now()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=self.lease_seconds,
                                    acquire_time=acquire_time or now, renew_time=now,
                                    lease_transitions=transitions))

    def try_acquire(self) -> bool:
        """One attempt to take or keep the Lease; True when this process holds it afterwards."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(self.namespace, self._body(None, 0))
                self.last_read = time.monotonic()
                return True
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        self.last_read = time.monotonic()
        spec = lease.spec
        rv = lease.metadata.resource_version
        if rv != self._seen[0]:
            self._seen = (rv, time.monotonic())
        holder = spec.holder_identity or ""
        expired = time.monotonic() - self._seen[1] > (spec.lease_duration_seconds or self.lease_seconds)
        if holder and holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        body = self._body(spec.acquire_time if mine else None,
                          (spec.lease_transitions or 0) + (0 if mine else 1))
        body.metadata.resource_version = rv  # optimistic: a racing candidate gets 409
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        if not mine:
            log.warning("acquired leader lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def acquire(self) -> None:
        """Block until this process is the leader."""
        period = max(1.0, self.lease_seconds / 5)
        log.info("waiting for leader lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not self._stop.is_set():
            try:
                if self.try_acquire():
                    self.leading = True
                    metrics.LEADER.set(1)
                    return
            except ApiException as e:
                log.warning("leader election: %s", e.reason)
            self._stop.wait(period)

    def keep(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in the background; call `on_lost` if the Lease could not be renewed in time."""

        def renew() -> None:
            last_ok = time.monotonic()
            while not self._stop.wait(self.lease_seconds / 3):
                try:
                    if self.try_acquire():
                        last_ok = time.monotonic()
                        continue
                    log.error("leader lease %s taken by another replica", self.name)
                except Exception as e:  # any failure to renew counts against the deadline
                    log.warning("leader lease renewal failed: %s", e)
                    if time.monotonic() - last_ok < self.lease_seconds * 2 / 3:
                        continue
                self.leading = False
                metrics.LEADER.set(0)
                on_lost()
                return

        thread = threading.Thread(target=renew, name="lease-renew", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Give the Lease up at a clean stop, so a standby takes over at once instead of after expiry."""
        self._stop.set()
        self.leading = False
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            log.warning("could not release the leader lease: %s", e.reason)
        metrics.LEADER.set(0)
