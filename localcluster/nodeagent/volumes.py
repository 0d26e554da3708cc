"""Pod volumes as directories on the host, bind-mounted into each container at its mountPath.

Every volume becomes a host directory (``<pod dir>/volumes/<name>``, or the hostPath / the
PersistentVolume's path). Each container's first process (``shim.py``) runs in its own mount
namespace and bind-mounts those directories at the ``volumeMounts`` paths, read-only where asked,
so a pod sees ``/var/run/secrets/kubernetes.io/serviceaccount/token`` at the standard path and
in-cluster clients work unchanged, while the host's own view of ``/var/run`` never changes.

Supported: emptyDir (a directory; ``medium: Memory`` too), configMap, secret, downwardAPI,
hostPath (with its ``type`` checks), persistentVolumeClaim (bound to a PV with ``hostPath`` or
``local``), and projected (serviceAccountToken from the TokenRequest API, bound to the pod,
refreshed at 80 % of its lifetime like the kubelet does; configMap; secret; downwardAPI).
ConfigMap and secret contents are written once at pod start (a kubelet refreshes them).
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.nodeagent import envvars

Obj = dict[str, Any]
Getter = envvars.Getter
#: (service account, namespace, TokenRequest spec) -> TokenRequest status (token, expiry).
TokenMinter = Callable[[str, str, Obj], Obj]


class VolumeError(RuntimeError):
    """A volume cannot be set up yet (missing object, unbound claim): retried by the caller."""


@dataclass
class TokenFile:
    """A projected service-account token file and when to renew it."""

    path: Path
    request: Obj
    refresh_at: float


@dataclass
class PodVolumes:
    """The host directory of each of a pod's volumes, and its token files."""

    sources: dict[str, Path] = field(default_factory=dict)
    tokens: list[TokenFile] = field(default_factory=list)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically (readers never see half a token) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _items(data: dict[str, bytes], items: list[Obj] | None, optional: bool, what: str,
           default_mode: int) -> list[tuple[str, bytes, int]]:
    """Apply a volume source's ``items`` (key -> path, mode) to an object's data."""
    if not items:
        return [(k, v, default_mode) for k, v in data.items()]
    out = []
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise VolumeError(f"key {it['key']} not found in {what}")
        out.append((it["path"], data[it["key"]], it.get("mode", default_mode)))
    return out


def _object_files(get: Getter, kind: str, ns: str, src: Obj, default_mode: int) -> list[tuple[str, bytes, int]]:
    """The files of a configMap or secret source (empty when optional and missing)."""
    name = src.get("name") or src.get("secretName", "")
    obj = get(kind, ns, name)
    optional = bool(src.get("optional"))
    if obj is None:
        if optional:
            return []
        raise VolumeError(f"{kind[:-1]} {ns}/{name} not found")
    if kind == "secrets":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return _items(data, src.get("items"), optional, f"{kind[:-1]} {ns}/{name}", default_mode)


def _downward_files(pod: Obj, pod_ip: str, src: Obj, default_mode: int) -> list[tuple[str, bytes, int]]:
    """The files of a downwardAPI source."""
    out = []
    for it in src.get("items") or []:
        if "fieldRef" in it:
            value = envvars.field_value(pod, it["fieldRef"]["fieldPath"], pod_ip)
        else:
            raise VolumeError(f"unsupported downwardAPI item {it.get('path')}: only fieldRef")
        out.append((it["path"], value.encode(), it.get("mode", default_mode)))
    return out


def _host_path(src: Obj) -> Path:
    """Check (or create) a hostPath as its ``type`` says, and return it."""
    path, kind = Path(src["path"]), src.get("type", "")
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    checks = {"Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
              "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}
    if kind in checks and not (path.exists() and checks[kind](path.stat().st_mode)):
        raise VolumeError(f"hostPath {path} is not a {kind}")
    if not path.exists():
        path.mkdir(parents=True)  # type "" (unset): a kubelet's runtime creates a directory too
    return path


def _claim_path(get: Getter, ns: str, claim: str) -> Path:
    """The host directory behind a bound PersistentVolumeClaim."""
    pvc = get("persistentvolumeclaims", ns, claim)
    if pvc is None:
        raise VolumeError(f"persistentvolumeclaim {ns}/{claim} not found")
    pv_name = (pvc.get("spec") or {}).get("volumeName")
    if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
        raise VolumeError(f"persistentvolumeclaim {ns}/{claim} is not bound")
    pv = get("persistentvolumes", "", pv_name)
    spec = (pv or {}).get("spec") or {}
    src = spec.get("hostPath") or spec.get("local")
    if not src:
        raise VolumeError(f"persistentvolume {pv_name} has neither hostPath nor local: not supported here")
    path = Path(src["path"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mint(token_file: TokenFile, mint: TokenMinter, sa: str, ns: str) -> None:
    """Request a token and write it; schedule the renewal at 80 % of its lifetime."""
    status = mint(sa, ns, token_file.request)
    _write(token_file.path, status["token"].encode(), 0o644)
    lifetime = token_file.request.get("expirationSeconds", 3600)
    token_file.refresh_at = time.monotonic() + 0.8 * lifetime


def prepare(pod: Obj, pod_dir: Path, pod_ip: str, get: Getter, mint: TokenMinter) -> PodVolumes:
    """Create every volume of ``pod`` on the host and return where each one is."""
    ns, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
    sa = pod["spec"].get("serviceAccountName") or "default"
    out = PodVolumes()
    for vol in pod["spec"].get("volumes") or []:
        name, d = vol["name"], pod_dir / "volumes" / vol["name"]
        files: list[tuple[str, bytes, int]] = []
        if "hostPath" in vol:
            out.sources[name] = _host_path(vol["hostPath"])
            continue
        if "persistentVolumeClaim" in vol:
            out.sources[name] = _claim_path(get, ns, vol["persistentVolumeClaim"]["claimName"])
            continue
        d.mkdir(parents=True, exist_ok=True)
        out.sources[name] = d
        if "emptyDir" in vol:
            continue
        if "configMap" in vol:
            src = vol["configMap"]
            files = _object_files(get, "configmaps", ns, src, src.get("defaultMode", 0o644))
        elif "secret" in vol:
            src = vol["secret"]
            files = _object_files(get, "secrets", ns, src, src.get("defaultMode", 0o644))
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"]
            files = _downward_files(pod, pod_ip, src, src.get("defaultMode", 0o644))
        elif "projected" in vol:
            mode = vol["projected"].get("defaultMode", 0o644)
            for s in vol["projected"].get("sources") or []:
                if "serviceAccountToken" in s:
                    t = s["serviceAccountToken"]
                    request = {"expirationSeconds": t.get("expirationSeconds", 3600),
                               "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                  "name": pod["metadata"]["name"], "uid": uid}}
                    if t.get("audience"):
                        request["audiences"] = [t["audience"]]
                    tf = TokenFile(d / t["path"], request, 0.0)
                    _mint(tf, mint, sa, ns)
                    out.tokens.append(tf)
                elif "configMap" in s:
                    files += _object_files(get, "configmaps", ns, s["configMap"], mode)
                elif "secret" in s:
                    files += _object_files(get, "secrets", ns, s["secret"], mode)
                elif "downwardAPI" in s:
                    files += _downward_files(pod, pod_ip, s["downwardAPI"], mode)
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise VolumeError(f"volume {name}: type {kinds} is not supported on process nodes")
        for rel, data, m in files:
            _write(d / rel, data, m)
    return out


def refresh_tokens(pod: Obj, vols: PodVolumes, mint: TokenMinter) -> None:
    """Renew projected tokens that reached 80 % of their lifetime (errors retry next time)."""
    sa = pod["spec"].get("serviceAccountName") or "default"
    for tf in vols.tokens:
        if time.monotonic() >= tf.refresh_at:
            with contextlib.suppress(Exception):
                _mint(tf, mint, sa, pod["metadata"]["namespace"])


def mounts(container: Obj, vols: PodVolumes) -> list[Obj]:
    """The bind mounts of one container, parents before children (the order to mount them)."""
    out = []
    for vm in container.get("volumeMounts") or []:
        src = vols.sources.get(vm["name"])
        if src is None:
            raise VolumeError(f"volumeMount {vm['mountPath']}: no volume named {vm['name']}")
        sub = vm.get("subPath") or ""
        if sub:
            if os.path.isabs(sub) or ".." in Path(sub).parts:
                raise VolumeError(f"subPath {sub!r} must be relative and stay inside the volume")
            src = src / sub
            if not src.exists():
                src.mkdir(parents=True)
        out.append({"source": str(src), "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
    return sorted(out, key=lambda m: len(Path(m["target"]).parts))
