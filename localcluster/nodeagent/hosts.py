"""Name resolution in pods: a per-pod hosts file, kept current from EndpointSlices.

We chose hosts files over a cluster DNS server (CoreDNS would be another Go build and another
process): ``ip netns exec`` bind-mounts ``/etc/netns/<ns>/hosts`` over ``/etc/hosts`` for every
process of the pod, so glibc, Python, gloo and torchrun resolve through it. Each file holds
what a kubelet's hosts file holds (localhost, the pod's own hostname -> its own IP, hostAliases)
plus the records cluster DNS would serve for **headless** Services of the pod's namespace:
``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc``, ``<svc>.<ns>.svc.cluster.local`` -> every ready
endpoint, and ``<hostname>.<svc>...`` -> the endpoint with that hostname (pods with
``spec.hostname`` + ``spec.subdomain``). ``kubernetes[.default[.svc[.cluster.local]]]`` name the
API server's bridge address. ClusterIP Services do not resolve: there is no service proxy.

The file is rewritten in place (same inode), because the bind mount pins the inode it saw.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
DOMAIN = "cluster.local"
HEADLESS_LABEL = "service.kubernetes.io/headless"


def pod_hostname(pod: Obj) -> str:
    """The pod's hostname: ``spec.hostname`` or its name, cut to 63 characters as a kubelet does."""
    return (pod["spec"].get("hostname") or pod["metadata"]["name"])[:63].rstrip("-.")


def own_entries(pod: Obj, pod_ip: str, apiserver_ip: str) -> str:
    """The part of a pod's hosts file that does not depend on Services."""
    ns, host = pod["metadata"]["namespace"], pod_hostname(pod)
    sub = pod["spec"].get("subdomain")
    names = f"{host}.{sub}.{ns}.svc.{DOMAIN}\t{host}" if sub else host
    lines = ["# Kubernetes-managed hosts file (localcluster process node).",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{pod_ip}\t{names}",
             f"{apiserver_ip}\tkubernetes kubernetes.default kubernetes.default.svc "
             f"kubernetes.default.svc.{DOMAIN}"]
    for alias in pod["spec"].get("hostAliases") or []:
        lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames') or [])}")
    return "\n".join(lines) + "\n"


class ServiceRecords:
    """Headless Services' endpoints by namespace, from EndpointSlice events (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # namespace -> slice name -> (service name, [(ip, hostname)])
        self._slices: dict[str, dict[str, tuple[str, list[tuple[str, str | None]]]]] = {}

    @staticmethod
    def _endpoints(sl: Obj) -> list[tuple[str, str | None]]:
        out = []
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            out += [(addr, ep.get("hostname")) for addr in ep.get("addresses") or []]
        return out

    def replace_all(self, slices: list[Obj]) -> set[str]:
        """Reset from a full list; return the namespaces whose records may have changed."""
        with self._lock:
            before = set(self._slices)
            self._slices = {}
        for sl in slices:
            self.apply("ADDED", sl)
        return before | set(self._slices)

    def apply(self, etype: str, sl: Obj) -> str | None:
        """Apply one event; return its namespace if it is a headless Service's slice."""
        meta = sl["metadata"]
        labels = meta.get("labels") or {}
        svc = labels.get("kubernetes.io/service-name")
        if svc is None or HEADLESS_LABEL not in labels:
            return None
        ns = meta["namespace"]
        with self._lock:
            per_ns = self._slices.setdefault(ns, {})
            if etype == "DELETED":
                per_ns.pop(meta["name"], None)
            else:
                per_ns[meta["name"]] = (svc, self._endpoints(sl))
        return ns

    def entries(self, ns: str) -> str:
        """The hosts-file lines for namespace ``ns`` (stable order: unchanged -> same text)."""
        with self._lock:
            slices = list((self._slices.get(ns) or {}).values())
        lines = set()
        for svc, eps in slices:
            fq = f"{svc}.{ns}.svc.{DOMAIN}"
            for ip, hostname in eps:
                lines.add(f"{ip}\t{svc} {svc}.{ns} {svc}.{ns}.svc {fq}")
                if hostname:
                    lines.add(f"{ip}\t{hostname}.{fq} {hostname}.{svc}.{ns}.svc {hostname}.{svc}.{ns} "
                              f"{hostname}.{svc}")
        return "".join(line + "\n" for line in sorted(lines))


def write_in_place(path: Path, text: str) -> bool:
    """Replace a file's content keeping its inode; return whether the content changed."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return False  # the sandbox is gone
    with contextlib.closing(os.fdopen(fd, "r+b")) as f:
        if f.read() == data:
            return False
        f.seek(0)
        f.write(data)
        f.truncate()
    return True
