"""A container's environment, as a kubelet computes it.

Order and precedence follow the kubelet: ``envFrom`` sources first, then ``env`` entries in
order (later wins); ``$(NAME)`` in values, command and args expands to variables defined
before it (``$$`` escapes); the service-link variables of the ``kubernetes`` Service point at
the API server's address on the bridge, so in-cluster clients work from inside the pod's
network namespace. ``valueFrom`` supports ``fieldRef`` (the downward API), ``resourceFieldRef``,
``configMapKeyRef`` and ``secretKeyRef``.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
#: (kind "configmaps"|"secrets", namespace, name) -> the object, or None if it does not exist.
Getter = Callable[[str, str, str], Obj | None]


class EnvError(ValueError):
    """A required reference could not be resolved (the kubelet's CreateContainerConfigError)."""


def field_value(pod: Obj, path: str, pod_ip: str) -> str:
    """Resolve one downward-API ``fieldPath`` against the pod."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": "", "status.hostIPs": "",
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    raise EnvError(f"unsupported fieldPath {path!r}")


def _quantity(q: str) -> float:
    """Parse a Kubernetes quantity (``500m``, ``2``, ``1Gi``, ``1G``) into a number."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
                "Ti": 2**40}
    m = re.fullmatch(r"([0-9.eE+-]+)([a-zA-Z]*)", str(q))
    if not m or m.group(2) not in {"", *suffixes}:
        raise EnvError(f"bad quantity {q!r}")
    return float(m.group(1)) * suffixes.get(m.group(2), 1.0)


def resource_value(container: Obj, ref: Obj, node_alloc: Obj) -> str:
    """Resolve a ``resourceFieldRef`` (limits fall back to the node's allocatable)."""
    res = ref["resource"]
    kind, _, name = res.partition(".")
    value = (container.get("resources") or {}).get(kind, {}).get(name)
    if value is None:
        value = node_alloc.get(name, "0") if kind == "limits" else "0"
    divisor = _quantity(ref.get("divisor") or "1")
    return str(math.ceil(_quantity(value) / divisor))


def _key_ref(get: Getter, kind: str, ns: str, ref: Obj) -> str | None:
    """Resolve a configMapKeyRef / secretKeyRef (None when optional and missing)."""
    obj = get(kind, ns, ref["name"])
    data = (obj or {}).get("data") or {}
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        what = "configmap" if kind == "configmaps" else "secret"
        raise EnvError(f"couldn't find key {ref['key']} in {what} {ns}/{ref['name']}")
    value = data[ref["key"]]
    return base64.b64decode(value).decode() if kind == "secrets" else str(value)


def expand(value: str, env: dict[str, str]) -> str:
    """Expand ``$(NAME)`` with earlier variables; ``$$`` is a literal ``$``; unknown refs stay."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def service_env(host: str, port: int) -> dict[str, str]:
    """The ``kubernetes`` Service's link variables, aimed where pods can reach the API server."""
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": f"tcp://{host}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": str(port), "KUBERNETES_PORT_443_TCP_ADDR": host}


def container_env(pod: Obj, container: Obj, base: dict[str, str], pod_ip: str, get: Getter,
                  node_alloc: Obj) -> dict[str, str]:
    """Return the complete environment of one container."""
    ns = pod["metadata"]["namespace"]
    env = dict(base)
    for src in container.get("envFrom") or []:
        kind, ref = ("configmaps", src["configMapRef"]) if "configMapRef" in src else ("secrets", src["secretRef"])
        obj = get(kind, ns, ref["name"])
        if obj is None:
            if ref.get("optional"):
                continue
            raise EnvError(f"{kind[:-1]} {ns}/{ref['name']} not found")
        for k, v in (obj.get("data") or {}).items():
            env[src.get("prefix", "") + k] = base64.b64decode(v).decode() if kind == "secrets" else str(v)
    for e in container.get("env") or []:
        vf = e.get("valueFrom")
        if vf is None:
            env[e["name"]] = expand(e.get("value", ""), env)
            continue
        value: str | None
        if "fieldRef" in vf:
            value = field_value(pod, vf["fieldRef"]["fieldPath"], pod_ip)
        elif "resourceFieldRef" in vf:
            value = resource_value(container, vf["resourceFieldRef"], node_alloc)
        elif "configMapKeyRef" in vf:
            value = _key_ref(get, "configmaps", ns, vf["configMapKeyRef"])
        elif "secretKeyRef" in vf:
            value = _key_ref(get, "secrets", ns, vf["secretKeyRef"])
        else:
            raise EnvError(f"unsupported valueFrom in env {e['name']}: {sorted(vf)}")
        if value is not None:
            env[e["name"]] = value
    return env
