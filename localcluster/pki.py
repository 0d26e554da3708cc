"""Certificates and keys for the local cluster, made with the openssl CLI.

Kubernetes authenticates components by client certificate (the subject's CN is the user, O the
groups) and the API server by its serving certificate, so a real cluster needs a small PKI. We
use the openssl CLI (present everywhere) rather than a Python crypto package (a new
dependency). Keys are ECDSA P-256: a second to make all of them, where RSA takes several.
Every function is idempotent: an existing certificate is kept, so restarts keep kubeconfigs
valid.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localcluster.state import BRIDGE_IP, SERVICE_IP

DAYS = 3650
#: DNS names the API server answers to, inside and outside pods.
APISERVER_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")
APISERVER_IPS = ("127.0.0.1", SERVICE_IP, BRIDGE_IP)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path

    def exists(self) -> bool:
        """Tell whether both files are present (a half-written pair counts as absent)."""
        return self.cert.is_file() and self.key.is_file()


def _openssl(*args: str) -> None:
    """Run openssl, turning a failure into an error that carries openssl's own message."""
    res = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {res.stderr.strip()}")


def _new_key(path: Path) -> None:
    """Write a new P-256 private key readable only by us."""
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


def ca(pki: Path) -> CertPair:
    """Return the cluster CA, creating it on first use."""
    pair = CertPair(pki / "ca.crt", pki / "ca.key")
    if pair.exists():
        return pair
    pki.mkdir(parents=True, exist_ok=True)
    _new_key(pair.key)
    _openssl("req", "-x509", "-new", "-key", str(pair.key), "-out", str(pair.cert), "-days", str(DAYS),
             "-subj", "/CN=localcluster-ca", "-sha256",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
             "-addext", "subjectKeyIdentifier=hash")
    return pair


def _subject(cn: str, orgs: tuple[str, ...]) -> str:
    """Build an openssl ``-subj`` string: groups as O, user as CN."""
    return "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"


def issue(pki: Path, name: str, cn: str, orgs: tuple[str, ...] = (), *, client: bool = True,
          server: bool = False, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> CertPair:
    """Return the pair ``<pki>/<name>.crt|key`` signed by the cluster CA, creating it if absent.

    ``name`` may hold a subdirectory (``nodes/n1-client``); the CA is always ``<pki>/ca.*``.

    ``client`` and ``server`` choose the extended key usages; ``dns`` and ``ips`` become
    subjectAltNames (Go ignores the CN for host names, so a serving cert needs them).
    """
    pair = CertPair(pki / f"{name}.crt", pki / f"{name}.key")
    if pair.exists():
        return pair
    authority = ca(pki)
    pair.key.parent.mkdir(parents=True, exist_ok=True)
    _new_key(pair.key)
    usages = [u for u, on in (("clientAuth", client), ("serverAuth", server)) if on]
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
    ]
    sans = [f"DNS:{d}" for d in dns] + [f"IP:{ipaddress.ip_address(i)}" for i in ips]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    with tempfile.TemporaryDirectory(prefix="localcluster-pki-") as tmp:
        csr, extfile = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        extfile.write_text("\n".join(ext) + "\n")
        _openssl("req", "-new", "-key", str(pair.key), "-subj", _subject(cn, orgs), "-out", str(csr))
        cert_tmp = Path(tmp) / "cert.pem"
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(authority.cert), "-CAkey", str(authority.key),
                 "-set_serial", "0x" + secrets.token_hex(16), "-days", str(DAYS), "-sha256",
                 "-extfile", str(extfile), "-out", str(cert_tmp))
        # Write the certificate last: its presence marks the pair complete.
        cert_tmp.replace(pair.cert)
    return pair


def service_account_keys(pki: Path) -> CertPair:
    """Return the service-account token signing key pair (``cert`` holds the public key).

    The API server signs TokenRequest tokens (projected service-account tokens) with the
    private key and verifies them with the public one; the controller manager needs the
    private key for legacy token secrets.
    """
    pair = CertPair(pki / "sa.pub", pki / "sa.key")
    if pair.exists():
        return pair
    pki.mkdir(parents=True, exist_ok=True)
    _new_key(pair.key)
    _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
    return pair


def apiserver_serving(pki: Path, extra_ips: tuple[str, ...] = ()) -> CertPair:
    """The API server's serving certificate (loopback, service IP, bridge IP, service names)."""
    return issue(pki, "apiserver", "kube-apiserver", client=False, server=True, dns=APISERVER_DNS,
                 ips=APISERVER_IPS + extra_ips)


def admin(pki: Path) -> CertPair:
    """The admin client certificate: group system:masters bypasses RBAC, as kubeadm's does."""
    return issue(pki, "admin", "kubernetes-admin", ("system:masters",))


def controller_manager(pki: Path) -> CertPair:
    """The controller manager's client certificate (bound by RBAC's bootstrap policy)."""
    return issue(pki, "controller-manager", "system:kube-controller-manager")


def scheduler(pki: Path) -> CertPair:
    """The scheduler's client certificate (bound by RBAC's bootstrap policy)."""
    return issue(pki, "scheduler", "system:kube-scheduler")


def apiserver_kubelet_client(pki: Path) -> CertPair:
    """The API server's client certificate toward node agents (``kubectl logs``, exec).

    O=kubeadm:cluster-admins is what kubeadm uses; a node agent that checks client certs
    should accept any certificate from the cluster CA with this CN.
    """
    return issue(pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                 ("kubeadm:cluster-admins",))


def node_client(pki: Path, node: str) -> CertPair:
    """A node's client certificate: CN=system:node:NAME, O=system:nodes.

    The Node authorizer and the NodeRestriction admission plugin then limit the node agent to
    its own Node, Lease and pods, exactly as they limit a kubelet.
    """
    return issue(pki, f"nodes/{node}-client", f"system:node:{node}", ("system:nodes",))


def node_serving(pki: Path, node: str, ips: tuple[str, ...]) -> CertPair:
    """A node agent's serving certificate (its kubelet API, for logs), with its IPs as SANs."""
    return issue(pki, f"nodes/{node}-serving", f"system:node:{node}", ("system:nodes",),
                 client=False, server=True, dns=(node,), ips=ips)


def kube_proxy(pki: Path) -> CertPair:
    """The service-proxy identity (``system:kube-proxy``, bound to ``system:node-proxier`` by
    RBAC's bootstrap policy): node agents read EndpointSlices with it to keep pods' hosts files
    current, as kube-proxy does on a real node; the node identity itself may not list them."""
    return issue(pki, "kube-proxy", "system:kube-proxy")


def ensure_control_plane(pki: Path, extra_ips: tuple[str, ...] = ()) -> None:
    """Create every certificate and key the control plane needs (fast when they exist).

    ``extra_ips`` go into the API server's serving certificate (the cluster's bridge address
    when it is not the default one).
    """
    ca(pki)
    service_account_keys(pki)
    apiserver_serving(pki, tuple(i for i in extra_ips if i not in APISERVER_IPS))
    apiserver_kubelet_client(pki)
    admin(pki)
    controller_manager(pki)
    scheduler(pki)
