"""Tiny HTTPS probes of the control plane, without importing the kubernetes client.

``up`` polls these many times a second while the cluster starts, and the kubernetes client
takes about a second just to import; the standard library's urllib does the job in
milliseconds.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

from localcluster.pki import CertPair


def client_context(ca_cert: Path, client: CertPair) -> ssl.SSLContext:
    """An SSL context that verifies the API server and presents a client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def unverified_context() -> ssl.SSLContext:
    """An SSL context for the self-signed health endpoints of the controller manager and
    scheduler (they generate their own serving certificates; only liveness is asked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``url`` and return (status, body); (0, reason) when nothing answered.

    Proxies from the environment are ignored: the control plane is local, and an
    ``https_proxy`` meant for package registries must not swallow these probes.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        return 0, str(e)


def ok(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    """Tell whether ``url`` answers 200."""
    return get(url, ctx, timeout)[0] == 200
