"""The operator's read layer: jobs, their pods and progress reports as the watch streams delivered them.

kopf receives every event of a job and of its children (watched by the job label on the API server);
`watches` hands each one here before kopf dispatches it (`Store.event`), so a pass that an event triggers
reads a store at least as new as that event and makes no read request of its own: the job, its pods (by
job), its progress report, and the hints of the other children `Cluster.converge` applied (dropped when
an event shows a child changed by someone else or gone, so a hand edit heals in the pass that event
triggers) all come from here.

What a pass writes is put here at once (`wrote`, `deleting`, `gone`): the "expectations" of a
controller. The next pass never misses a pod the previous one created (so it never creates a second
worker of an index) nor deletes one twice, whatever the watch has delivered by then. An object older
than the one held (by resourceVersion, compared as integers as client-go's mutation cache does) never
replaces it, and a deleted object's uid is remembered for a while so a late write-through cannot bring
it back. A pod create that got no answer (`unanswered`) may have happened all the same: the job's pods are
unknown until a pass has read them from the API server (`read`).

Until a stream has finished its initial listing, and from its end until it has listed again, the store
answers "unknown" (`UNKNOWN`) for its kind and namespace, and the caller asks the API server as before;
an operator run without the stream hook (`watches.WatchTracker.install`) always asks. A relisting drops
what it no longer contains (deletions missed while disconnected), judged by resourceVersion against the
listing's own: an object absent from a listing taken after it was written is gone (its DELETED event came
before the new watch's start and never comes), one written after the listing was taken is kept (the watch
brings its events). A pass's answer that arrives after such a listing does not bring the object back.

Kept per object: a job without `managedFields`; a pod as `slim_pod` projects it (what `decide` and the
reconciler read); a progress ConfigMap's report text. Thread-safe: fed on kopf's event loop, read and
written through by passes in executor threads. Callers must not mutate what it returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dstj_api.contract import JOB_LABEL, KIND, PLURAL, PROGRESS_KEY, ROLE_LABEL
from dstj_operator.converge import Mode

Obj = dict[str, Any]
StreamKey = tuple[str, str | None]
"""(plural, namespace or None for a cluster-wide stream)."""


class _Unknown(Enum):
    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN
"""The store has not listed this kind in this namespace (or its stream is down): ask the API server."""

TOMBSTONE_SECONDS = 120.0
"""How long a deleted object's uid is remembered (longer than any pass that could write it back)."""
HINTS_PRUNED_AT = 10_000
"""Hints held before expired ones are looked for (the deleted children of a synced kind drop theirs at once)."""
RECHECK_SECONDS = 300.0
"""How long an applied child of a kind no synced stream watches is taken to be as applied."""
_POD_META = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations", "creationTimestamp",
             "deletionTimestamp")
_POD_STATUS = ("phase", "reason", "nominatedNodeName")
_CONDITION = ("type", "status", "reason", "message", "lastTransitionTime")


def slim_pod(pod: Obj) -> Obj:
    """The fields of a pod the operator reads (`decide.observe`, `classify_end`, the store's port, who owns
    it), about a tenth of the body: what it keeps of thousands of pods."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    out_status: Obj = {k: status[k] for k in _POD_STATUS if k in status}
    if "conditions" in status:
        out_status["conditions"] = [{k: c[k] for k in _CONDITION if k in c} for c in status["conditions"] or []]
    for key in ("initContainerStatuses", "containerStatuses"):
        if key in status:
            out_status[key] = [{"name": cs.get("name"), "state": cs.get("state") or {}} for cs in status[key] or []]
    out_spec: Obj = {"containers": [{"name": c.get("name"), **({"ports": c["ports"]} if c.get("ports") else {})}
                                    for c in spec.get("containers") or []]}
    if spec.get("nodeName"):
        out_spec["nodeName"] = spec["nodeName"]
    return {"metadata": {k: meta[k] for k in _POD_META if k in meta}, "spec": out_spec, "status": out_status}


def _lean(obj: Obj) -> Obj:
    """`obj` without managedFields (the largest part of a small object, and never read)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def handed_to_kopf(plural: str, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The raw watch event as kopf gets it once the store has it: the object without `managedFields`, and a pod as
    `slim_pod` projects it (with its kind). The handlers read only the event's type, names and labels, and a pod's
    node (passes read the store), while kopf holds each event's body in its per-object queue until that object's
    worker takes it: during a bring-up thousands of bodies wait there at once, and the allocator keeps the
    high-water of that backlog resident."""
    obj = raw.get("object")
    if not isinstance(obj, dict):
        return raw
    if plural == "pods":
        return {**raw, "object": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"),
                                  **slim_pod(obj)}}
    return {**raw, "object": _lean(obj)}


def _version(obj: Obj | None) -> int:
    """An object's resourceVersion as a number (-1 when it has none or it is not a number)."""
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


def _number(version: str | None) -> int | None:
    """A resourceVersion as a number (None when there is none or it is not a number)."""
    try:
        return int(version) if version else None
    except ValueError:
        return None


def _after(version: int | None, listing: int | None) -> bool:
    """Whether an object of `version` was written after a listing taken at `listing` (no when either is unknown)."""
    return version is not None and listing is not None and version > listing


def _uid(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("uid") or "")


def newer(incoming: Obj, held: Obj | None) -> bool:
    """Whether `incoming` may replace `held`: nothing held, another object of the same name (another uid), or
    a version not older (versions that are not numbers: the incoming one wins)."""
    if held is None or _uid(incoming) != _uid(held):
        return True
    a, b = _version(incoming), _version(held)
    return a < 0 or b < 0 or a >= b


@dataclass(slots=True, frozen=True)
class Hint:
    """How a child was last applied: the hash it was built with, the resourceVersion the apply returned."""

    hash: str
    resource_version: str
    mode: Mode
    at: float


HintKey = tuple[str, str, str, str]
"""(owner uid, kind, namespace, name)."""


def hint_key(obj: Obj) -> HintKey:
    """The key of a child's hint: a re-created job of the same name is another owner."""
    meta = obj["metadata"]
    owner = next((r["uid"] for r in meta.get("ownerReferences") or []), "")
    return owner, obj["kind"], meta.get("namespace", ""), meta["name"]


_KIND_PLURALS = {"ConfigMap": "configmaps", "Service": "services", "ServiceAccount": "serviceaccounts",
                 "Role": "roles", "RoleBinding": "rolebindings", "PodDisruptionBudget": "poddisruptionbudgets",
                 "NetworkPolicy": "networkpolicies", "PersistentVolumeClaim": "persistentvolumeclaims",
                 "Pod": "pods", KIND: PLURAL}


@dataclass(slots=True)
class _Listing:
    seen: set[tuple[str, str]]
    """(namespace, name) of every object the listing delivered."""


class Store:
    """The process's view of its jobs and their children (see the module docstring)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], Obj] = {}
        self._pods: dict[tuple[str, str], dict[str, Obj]] = {}
        """(namespace, job) -> pod name -> slim pod."""
        self._pod_job: dict[tuple[str, str], str] = {}
        """(namespace, pod name) -> its job (a DELETED event of a pod whose labels were edited still finds it)."""
        self._progress: dict[tuple[str, str], Obj] = {}
        """(namespace, ConfigMap name) -> {"metadata": uid and version, "report": the report's text}."""
        self._tombstones: dict[str, float] = {}
        self._tombstones_pruned_at = 1024
        self._hints: dict[HintKey, Hint] = {}
        self._prune_at = HINTS_PRUNED_AT
        self._synced: set[StreamKey] = set()
        self._listings: dict[StreamKey, _Listing] = {}
        self._listed_at: dict[StreamKey, int] = {}
        """The resourceVersion of each stream's last finished listing."""
        self._unanswered: set[tuple[str, str]] = set()
        """(namespace, job) whose pod create went unanswered (`unanswered`)."""

    # -- the streams ---------------------------------------------------------------------------------

    def opening(self, plural: str, namespace: str | None) -> None:
        """A stream (re)starts with a listing: until it has listed, its kind there is unknown."""
        with self._lock:
            self._synced.discard((plural, namespace))
            self._listings[plural, namespace] = _Listing(set())

    def listed(self, plural: str, namespace: str | None, version: str | None) -> None:
        """The stream's listing is over, taken at resourceVersion `version`: drop what it no longer holds.

        An object (or a child's hint) absent from the listing is gone unless it is newer than the listing: a pass
        wrote it after the listing was taken, and the watch, which starts there, brings its events. One a pass
        wrote before (while the stream was down, or while the listing was retried) and that was deleted before
        the listing was taken is dropped: its DELETED event is older than the watch and never comes, and kept it
        would hold its worker's index forever. With `version` unknown (None) the listing is the whole truth."""
        at = _number(version)
        with self._lock:
            listing = self._listings.pop((plural, namespace), None)
            if listing is not None:
                for ns, name in self._names(plural, namespace):
                    held = self._held(plural, ns, name, None)
                    if (ns, name) not in listing.seen and not _after(_version(held), at):
                        self._drop(plural, ns, name)
                for key, hint in list(self._hints.items()):  # children deleted while the stream was down
                    if (_KIND_PLURALS.get(key[1]) == plural and (namespace is None or key[2] == namespace)
                            and (key[2], key[3]) not in listing.seen
                            and not _after(_number(hint.resource_version), at)):
                        del self._hints[key]
                if at is not None:
                    self._listed_at[plural, namespace] = at
            self._synced.add((plural, namespace))

    def ended(self, plural: str, namespace: str | None) -> None:
        """The stream ended (kopf starts it again after a back-off): unknown until it lists again."""
        with self._lock:
            self._synced.discard((plural, namespace))

    def synced(self, plural: str, namespace: str) -> bool:
        """Whether a listed, running stream covers this kind in `namespace`."""
        with self._lock:
            return (plural, None) in self._synced or (plural, namespace) in self._synced

    def event(self, plural: str, namespace: str | None, raw: Mapping[str, Any]) -> None:
        """One raw event of a stream (`type` None for the listing's objects)."""
        kind, obj = raw.get("type"), raw.get("object") or {}
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        if kind == "BOOKMARK" or not ns or not name:
            return
        with self._lock:
            if kind is None:
                listing = self._listings.get((plural, namespace))
                if listing is not None:
                    listing.seen.add((ns, name))
            if kind == "DELETED":
                self._forget_hint(obj, deleted=True)
                held = self._held(plural, ns, name, obj)
                if held is not None and _uid(held) == _uid(obj):
                    self._drop(plural, ns, name)
                self._tombstones[_uid(obj)] = self._clock()
                return
            self._forget_hint(obj, deleted=False)
            self._put(plural, obj)

    # -- what passes read ------------------------------------------------------------------------------

    def job(self, namespace: str, name: str) -> Obj | _Unknown | None:
        """The job (None: it does not exist), or UNKNOWN."""
        if not self.synced(PLURAL, namespace):
            return UNKNOWN
        with self._lock:
            return self._jobs.get((namespace, name))

    def pods(self, namespace: str, job: str) -> list[Obj] | _Unknown:
        """The job's pods (slim, every role), or UNKNOWN."""
        if not self.synced("pods", namespace):
            return UNKNOWN
        with self._lock:
            if (namespace, job) in self._unanswered:
                return UNKNOWN
            return list((self._pods.get((namespace, job)) or {}).values())

    def progress(self, namespace: str, name: str) -> str | _Unknown | None:
        """The report text of progress ConfigMap `name` (None: no such ConfigMap, or no report), or UNKNOWN."""
        if not self.synced("configmaps", namespace):
            return UNKNOWN
        with self._lock:
            held = self._progress.get((namespace, name))
            return None if held is None else held["report"]

    # -- what passes write -------------------------------------------------------------------------------

    def wrote(self, obj: Obj) -> None:
        """An object a pass created or changed, as the API server answered: held at once (unless newer is held,
        or it was deleted meanwhile: its DELETED event seen, or absent from a listing taken after this version)."""
        with self._lock:
            self._write_through(obj)

    def unanswered(self, namespace: str, job: str) -> None:
        """A pod create of `job` got no answer (the connection dropped, as when the API server restarts): the pod
        may exist though no event says so yet, and a stream that is only retrying its watch still counts as
        listed. The job's pods are unknown until a pass has read them from the API server (`read`): the next
        pass never creates that index a second time."""
        with self._lock:
            self._unanswered.add((namespace, job))

    def read(self, namespace: str, job: str, pods: list[Obj]) -> None:
        """Every pod of `job` as a pass just read them from the API server: held as a pass's write is, and the
        job's pods are known again."""
        with self._lock:
            for p in pods:
                self._write_through(p)
            self._unanswered.discard((namespace, job))

    def deleting(self, pod: Obj) -> None:
        """A pod a pass deleted gracefully, as the API server answered (with its deletionTimestamp): held as
        terminating, so the next pass neither counts it live nor deletes it again."""
        meta = pod.get("metadata") or {}
        with self._lock:
            if self._held("pods", meta.get("namespace", ""), meta.get("name", ""), pod) is not None:
                self._put("pods", pod)

    def gone(self, namespace: str, name: str) -> None:
        """A pod a pass deleted at once (or found already gone)."""
        with self._lock:
            held = self._held("pods", namespace, name, None)
            if held is not None:
                self._tombstones[_uid(held)] = self._clock()
                self._drop("pods", namespace, name)

    # -- hints of applied children (`Cluster.converge`) ------------------------------------------------

    def hint(self, key: HintKey, digest: str) -> bool:
        """Whether the child stands as last applied with hash `digest` (no event has said otherwise; a kind
        no synced stream watches is checked again after RECHECK_SECONDS)."""
        with self._lock:
            held = self._hints.get(key)
        if held is None or held.hash != digest:
            return False
        plural = _KIND_PLURALS.get(key[1], "")
        return self.synced(plural, key[2]) or self._clock() - held.at < RECHECK_SECONDS

    def remember(self, key: HintKey, hint: Hint) -> None:
        """A child was applied (or created) as `hint` says."""
        with self._lock:
            self._hints[key] = hint
            if len(self._hints) > self._prune_at:  # jobs come and go: drop hints that have expired
                now = self._clock()
                for k, h in list(self._hints.items()):
                    watched = (_KIND_PLURALS.get(k[1], ""), None) in self._synced or \
                        (_KIND_PLURALS.get(k[1], ""), k[2]) in self._synced
                    if not watched and now - h.at >= RECHECK_SECONDS:
                        self._hints.pop(k, None)
                self._prune_at = max(HINTS_PRUNED_AT, 2 * len(self._hints))  # amortised: never a scan per call

    def forget(self, obj: Obj, deleted: bool = False) -> None:
        """A child's event: drop its hint when it is gone or changed by someone else (see `_forget_hint`)."""
        with self._lock:
            self._forget_hint(obj, deleted)

    def _forget_hint(self, obj: Obj, deleted: bool) -> None:
        """A create-only child's hint survives changes: the progress ConfigMap changes with every report."""
        if not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            return
        key = hint_key(obj)
        held = self._hints.get(key)
        if held is None:
            return
        changed = obj["metadata"].get("resourceVersion") != held.resource_version and held.mode is not Mode.CREATE_ONLY
        if deleted or changed:
            self._hints.pop(key, None)

    # -- inside, under the lock ------------------------------------------------------------------------

    def _write_through(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        plural = _KIND_PLURALS.get(obj.get("kind", ""), "")
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if _uid(obj) in self._tombstones or not plural:
            return
        listed_at = max(self._listed_at.get((plural, None), -1), self._listed_at.get((plural, ns), -1))
        if self._held(plural, ns, name, obj) is None and 0 <= _version(obj) <= listed_at:
            return  # absent from a listing taken after this version: deleted since
        self._put(plural, obj)

    def _names(self, plural: str, namespace: str | None) -> list[tuple[str, str]]:
        if plural == PLURAL:
            keys = list(self._jobs)
        elif plural == "pods":
            keys = list(self._pod_job)
        elif plural == "configmaps":
            keys = list(self._progress)
        else:
            return []
        return [k for k in keys if namespace is None or k[0] == namespace]

    def _held(self, plural: str, ns: str, name: str, obj: Obj | None) -> Obj | None:
        if plural == PLURAL:
            return self._jobs.get((ns, name))
        if plural == "pods":
            job = self._pod_job.get((ns, name))
            return None if job is None else (self._pods.get((ns, job)) or {}).get(name)
        if plural == "configmaps":
            return self._progress.get((ns, name))
        return None

    def _put(self, plural: str, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if plural == "configmaps" and (meta.get("labels") or {}).get(ROLE_LABEL) != "progress":
            return False
        if plural not in (PLURAL, "pods", "configmaps"):
            return False
        held = self._held(plural, ns, name, obj)
        if not newer(obj, held):
            return False
        if plural == PLURAL:
            self._jobs[ns, name] = _lean(obj)
        elif plural == "configmaps":
            self._progress[ns, name] = {"metadata": {"uid": meta.get("uid"), "resourceVersion":
                                                     meta.get("resourceVersion")},
                                        "report": (obj.get("data") or {}).get(PROGRESS_KEY)}
        else:
            job = (meta.get("labels") or {}).get(JOB_LABEL)
            old = self._pod_job.get((ns, name))
            if old is not None and old != job:
                self._drop("pods", ns, name)
            if job is None:
                return False
            self._pods.setdefault((ns, job), {})[name] = slim_pod(obj)
            self._pod_job[ns, name] = job
        self._expire_tombstones()
        return True

    def _drop(self, plural: str, ns: str, name: str) -> None:
        if plural == PLURAL:
            self._jobs.pop((ns, name), None)
        elif plural == "configmaps":
            self._progress.pop((ns, name), None)
        elif plural == "pods":
            job = self._pod_job.pop((ns, name), None)
            if job is not None:
                pods = self._pods.get((ns, job))
                if pods is not None:
                    pods.pop(name, None)
                    if not pods:
                        del self._pods[ns, job]

    def _expire_tombstones(self) -> None:
        if len(self._tombstones) < self._tombstones_pruned_at:
            return
        now = self._clock()
        for uid, at in list(self._tombstones.items()):
            if now - at > TOMBSTONE_SECONDS:
                del self._tombstones[uid]
        self._tombstones_pruned_at = max(1024, 2 * len(self._tombstones))  # amortised: never a scan per event


STORE = Store()
"""The process's store: fed by `watches`, read and written through by `Cluster` and the handlers."""
