"""Kubeconfig files with the certificates embedded.

Embedding (``*-data`` fields) instead of referring to files makes each kubeconfig
self-contained: it can be copied into a pod, a CI artifact or another shell and still works.
They are written as JSON, which is YAML too (kubectl, helm and the Python client read it),
so no YAML library is needed.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from localcluster.pki import CertPair

CLUSTER_NAME = "localcluster"


def _b64(path: Path) -> str:
    """Return a file's bytes base64-encoded, the form kubeconfig's ``*-data`` fields take."""
    return base64.b64encode(path.read_bytes()).decode()


def render(server: str, ca_cert: Path, client: CertPair, user: str,
           namespace: str = "default") -> dict[str, object]:
    """Build a kubeconfig document for one user of one cluster."""
    context = f"{user}@{CLUSTER_NAME}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME,
                      "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": user,
                   "user": {"client-certificate-data": _b64(client.cert),
                            "client-key-data": _b64(client.key)}}],
        "contexts": [{"name": context,
                      "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }


def write(path: Path, server: str, ca_cert: Path, client: CertPair, user: str) -> Path:
    """Write a kubeconfig atomically with mode 0600 (it holds a private key) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(render(server, ca_cert, client, user), f, indent=2)
        f.write("\n")
    tmp.replace(path)
    return path
