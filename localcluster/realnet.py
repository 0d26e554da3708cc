"""Service routing and cluster DNS for real nodes: one kube-proxy and one clusterdns per cluster.

Process nodes wrote hosts files instead; a real node's pods get the kubelet's own environment
(``KUBERNETES_SERVICE_HOST`` = the ``kubernetes`` Service's ClusterIP) and a ``resolv.conf``
naming the cluster DNS, so both must really work. All nodes of a cluster share the host's
network namespace, so one kube-proxy serves them all (per-node ones would fight over the same
iptables rules). A kube-proxy waits 30 s for its own Node to exist and exits when that Node is
deleted, so ``python -m localcluster.realnet`` supervises it: it runs kube-proxy named after a
real node that exists, and again after another one when that node is reclaimed. It masquerades
all Service traffic: pods share one L2 bridge, and without that a reply from a pod on the
bridge would bypass the DNAT it must be reversed by.
``clusterdns`` (gomod/clusterdns) answers Service and headless-endpoint names on the bridge
address, the ``clusterDNS`` every real kubelet is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from localcluster import kubeconfig, pki, procs
from localcluster.state import Network, StateDir, free_port

Progress = Callable[[str], None]
KUBE_PROXY = "kube-proxy"
CLUSTERDNS = "clusterdns"
#: Lets the API server's kubelet client (``kubectl logs/exec``) use real kubelets' APIs.
KUBELET_API_BINDING = "localcluster:kube-apiserver-kubelet-client"


def _dir(sd: StateDir) -> Path:
    return sd.root / "realnet"


def _proxy_config(sd: StateDir, net: Network, kc: Path) -> dict[str, object]:
    """KubeProxyConfiguration: iptables mode, masquerade everything, touch no host sysctl."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kc)},
        "mode": "iptables",
        "bindAddress": net.bridge_ip, "clusterCIDR": net.cidr,
        "healthzBindAddress": f"127.0.0.1:{free_port()}", "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "nodePortAddresses": [f"{net.bridge_ip}/32"],
        # localhostNodePorts would set route_localnet; the conntrack zeros keep the host's sysctls.
        "iptables": {"masqueradeAll": True, "localhostNodePorts": False, "syncPeriod": "30s",
                     "minSyncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
    }


def _bind_kubelet_api(sd: StateDir) -> None:
    """Authorise the API server's kubelet client on real kubelets (webhook authorization)."""
    from localcluster.nodeagent.kubeapi import Api, ApiError

    body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": KUBELET_API_BINDING},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "kube-apiserver-kubelet-client"}]}
    try:
        Api(sd.admin_kubeconfig).post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)
    except ApiError as e:
        if e.status != 409:
            raise


def ensure(sd: StateDir, bins: Path, net: Network, progress: Progress) -> None:
    """Start kube-proxy and clusterdns unless they run (idempotent)."""
    d = _dir(sd)
    d.mkdir(parents=True, exist_ok=True)
    ports = sd.load_ports()
    assert ports is not None
    kc = kubeconfig.write(d / "proxy.kubeconfig", f"https://127.0.0.1:{ports.apiserver}", sd.pki / "ca.crt",
                          pki.kube_proxy(sd.pki), "system:kube-proxy")
    _bind_kubelet_api(sd)
    started = []
    rec = procs.load(sd.procs, KUBE_PROXY)
    if rec is None or not procs.is_alive(rec):
        (d / "kube-proxy.yaml").write_text(json.dumps(_proxy_config(sd, net, kc), indent=2) + "\n")
        argv = [sys.executable, "-m", "localcluster.realnet", "--state", str(sd.root), "--kube-proxy",
                str(bins / "kube-proxy")]
        procs.spawn(sd.procs, KUBE_PROXY, argv, sd.logs / f"{KUBE_PROXY}.log")
        started.append(KUBE_PROXY)
    rec = procs.load(sd.procs, CLUSTERDNS)
    if rec is None or not procs.is_alive(rec):
        procs.spawn(sd.procs, CLUSTERDNS, [str(bins / "clusterdns"), f"--kubeconfig={kc}",
                                           f"--listen={net.bridge_ip}:53"], sd.logs / f"{CLUSTERDNS}.log")
        started.append(CLUSTERDNS)
    if started:
        progress(f"started {' and '.join(started)} (Service routing, cluster DNS on {net.bridge_ip}:53)")


def cleanup(sd: StateDir, progress: Progress) -> None:
    """Remove kube-proxy's rules (its own ``--cleanup``), after its process stopped."""
    from localcluster import build

    with contextlib.suppress(build.BuildError, OSError):
        proxy = build.node_bin_dir() / "kube-proxy"
        if (_dir(sd) / "kube-proxy.yaml").exists():
            subprocess.run([str(proxy), "--cleanup", "--v=0"], capture_output=True, check=False, timeout=60)
            progress("kube-proxy rules removed (kube-proxy --cleanup)")


def _a_real_node(sd: StateDir) -> str | None:
    """The name of a registered real node (the one kube-proxy is named after), or None."""
    from localcluster import nodes
    from localcluster.nodeagent.kubeapi import Api, ApiError

    api = Api(sd.admin_kubeconfig, pool_size=1)
    for r in nodes.records(sd):
        if r.kind != "real" or r.state != "active":
            continue
        try:
            api.get(f"/api/v1/nodes/{r.name}")
        except (ApiError, OSError):
            continue
        return r.name
    return None


def supervise(sd: StateDir, kube_proxy: Path) -> None:
    """Run kube-proxy named after an existing real node; rerun it when it exits (its node went)."""
    config = _dir(sd) / "kube-proxy.yaml"
    while True:
        node = _a_real_node(sd)
        if node is None:
            time.sleep(0.2)
            continue
        print(f"realnet: kube-proxy as node {node}", flush=True)
        subprocess.run([str(kube_proxy), f"--config={config}", f"--hostname-override={node}", "--v=1"], check=False)
        time.sleep(0.2)


def main() -> None:
    """``python -m localcluster.realnet --state DIR --kube-proxy BIN``: the kube-proxy supervisor."""
    p = argparse.ArgumentParser(description=supervise.__doc__)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--kube-proxy", type=Path, required=True)
    args = p.parse_args()
    supervise(StateDir(args.state), args.kube_proxy)


if __name__ == "__main__":
    main()
