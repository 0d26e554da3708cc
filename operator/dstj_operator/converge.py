"""Children converge on what the job asks for: each built child carries a hash of what it was built from,
and a child whose hash differs from the desired one is applied again (or, for pods, replaced).

Pure: the hash and the plan. `Cluster.converge` carries the plan out with server-side apply, which creates
a missing child, updates one that differs, and takes back fields someone edited by hand.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from dstj_api.contract import GROUP

HASH_ANNOTATION = f"{GROUP}/spec-hash"
"""The hash of the object as the operator built it (without this annotation)."""


class Mode(StrEnum):
    """How a kind of child follows the job."""

    APPLY = "apply"
    """Updated in place (server-side apply): ConfigMaps, Services, RBAC, PDB, NetworkPolicy."""
    CREATE_ONLY = "create-only"
    """Created when missing, never updated: the progress ConfigMap (the trainer writes its data) and a PVC
    (its spec is immutable once bound, and it may outlive the job)."""
    REPLACE = "replace"
    """Deleted and created again when it differs: pods (their spec is immutable)."""


def spec_hash(obj: dict[str, Any]) -> str:
    """A short, stable hash of `obj` without its hash annotation and its name (a pod's name carries a random
    suffix: the name is who it is, not what it was built from)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("name", "generateName")}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def stamped(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with its hash annotation."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: spec_hash(obj)}
    return {**obj, "metadata": meta}


def hash_of(live: dict[str, Any]) -> str | None:
    """The hash annotation of a live object (None when it has none: built by an older operator or by hand)."""
    return ((live.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)


_METADATA_OWNED = ("labels", "annotations")
_KEPT_SPEC = {"Service": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")}
"""Fields the API server fills in or keeps immutable: a replacement carries them over from the live object."""


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` holds everything `desired` says: dicts key by key (the server may add defaults), lists
    item by item and of the same length (an extra item, a port added by hand, is a difference)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    return bool(live == desired)


def matches(live: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a live child is as the operator built it: its content and its labels and annotations."""
    meta, live_meta = desired.get("metadata") or {}, live.get("metadata") or {}
    content = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    return contains({k: live.get(k) for k in content}, content) and all(
        contains(live_meta.get(k) or {}, meta.get(k) or {}) for k in _METADATA_OWNED)


def replacement(live: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The object to PUT over `live` so that it matches `desired`: its content replaced whole, its metadata
    keeping what others added (other labels, annotations, finalizers) and the version it replaces."""
    meta = {k: v for k, v in (live.get("metadata") or {}).items() if k != "managedFields"}
    for key in _METADATA_OWNED:
        meta[key] = {**(meta.get(key) or {}), **((desired.get("metadata") or {}).get(key) or {})}
    meta["ownerReferences"] = (desired.get("metadata") or {}).get("ownerReferences", meta.get("ownerReferences", []))
    body = {**desired, "metadata": meta}
    kept = {k: live["spec"][k] for k in _KEPT_SPEC.get(desired["kind"], ()) if k in (live.get("spec") or {})}
    if kept:
        body["spec"] = {**desired.get("spec", {}), **kept}
    return body
