"""The fleet benchmark's cluster: a private control plane with simulated nodes, the operator as its own user.

Private (its own state directory, ports and etcd) so the numbers are this fleet's alone and the
thousands of pods never land in a cluster someone else tests on. The operator runs as a process (so its
CPU and memory are read from /proc) under a user of its own, `dstj-operator`, bound to cluster-admin
but outside system:masters: the API server then counts its requests under FlowSchemas that match that
user, one per verb (`apiserver_flowcontrol_dispatched_requests_total{flow_schema="fleet-operator-VERB"}`),
since `apiserver_request_total` carries no user label.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.fleet.measure import by_label
from dstj_api.contract import GROUP, KIND, VERSION
from dstj_operator.crd import CRD_FILE, PLURAL
from localcluster import build, controlplane, fakenodes, health, kubeconfig, pki
from localcluster.kubectl import Kubectl
from localcluster.nodeagent.kubeapi import Api
from localcluster.state import Heartbeats, Ports, StateDir, free_port
from localcluster.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_USER = "dstj-operator"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
"""The request verbs the API server's flow control tells apart."""
FLOW_SCHEMA = "fleet-operator-"
HEARTBEATS = Heartbeats(node_monitor_grace_s=300, fake_node_lease_s=60)
"""A fleet's cluster on two cores answers late: with the default 8 s grace the N = 1,000 bring-up saw kwok's
heartbeats miss it, 195 nodes NotReady and 269 evictions, each a worker to replace (work the simulator made,
not the fleet). Nothing here waits for a node to die, and a 60 s Lease renewed every 15 s costs the API server
a renewal a second for 18 nodes, not nine."""


@dataclass(frozen=True, slots=True)
class FleetCluster:
    """A running private cluster: admin access, the operator's kubeconfig, and its state."""

    sd: StateDir
    kube: Kubectl
    api: Api
    operator_kubeconfig: Path

    def metrics(self) -> str:
        """The API server's /metrics text (as admin)."""
        ctx = health.client_context(self.sd.pki / "ca.crt", pki.admin(self.sd.pki))
        ports = self.sd.load_ports()
        assert ports is not None
        code, body = health.get(f"https://127.0.0.1:{ports.apiserver}/metrics", ctx, timeout=30)
        if code != 200:
            raise RuntimeError(f"GET /metrics answered {code}")
        return body

    def cpu_profile(self, seconds: int) -> bytes:
        """A CPU profile of the API server over the next `seconds` (pprof's format; `go tool pprof -top` reads it)."""
        import urllib.request

        ctx = health.client_context(self.sd.pki / "ca.crt", pki.admin(self.sd.pki))
        ports = self.sd.load_ports()
        assert ports is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        url = f"https://127.0.0.1:{ports.apiserver}/debug/pprof/profile?seconds={seconds}"
        with opener.open(url, timeout=seconds + 60) as resp:
            return bytes(resp.read())

    def pid(self, component: str) -> int | None:
        """The pid of a control-plane component or kwok (None when it is not running)."""
        from localcluster import procs

        rec = procs.load(self.sd.procs, component)
        return rec.pid if rec is not None and procs.is_alive(rec) else None


def _flow_schemas() -> list[dict[str, Any]]:
    """One FlowSchema per verb for the operator's user, all at the priority a ServiceAccount's requests get."""
    return [{"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
             "metadata": {"name": FLOW_SCHEMA + verb},
             "spec": {"priorityLevelConfiguration": {"name": "workload-low"}, "matchingPrecedence": 600,
                      "distinguisherMethod": {"type": "ByUser"},
                      "rules": [{"subjects": [{"kind": "User", "user": {"name": OPERATOR_USER}}],
                                 "resourceRules": [{"verbs": [verb], "apiGroups": ["*"], "resources": ["*"],
                                                    "clusterScope": True, "namespaces": ["*"]}],
                                 "nonResourceRules": [{"verbs": [verb], "nonResourceURLs": ["*"]}]}]}}
            for verb in VERBS]


TIGHT_LEVEL = "fleet-operator-tight"
"""A priority level of few seats that rejects at once what it cannot run (`throttle_operator`)."""


def throttle_operator(api: Api) -> None:
    """Put every request of the operator's user in `TIGHT_LEVEL`: the API server answers 429 to what does not fit.

    One nominal share against the built-in levels' ~245 gives it 3 of the server's 600 seats; it lends
    none and borrows none, and `Reject` queues nothing, so a burst of the operator's passes (and its
    LISTs, which weigh more than one seat) is throttled at once: API Priority and Fairness set tight.
    """
    api.post("/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations", {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": TIGHT_LEVEL},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "lendablePercent": 0,
                                                "borrowingLimitPercent": 0, "limitResponse": {"type": "Reject"}}}})
    for verb in VERBS:
        api.patch(f"/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/{FLOW_SCHEMA}{verb}",
                  {"spec": {"priorityLevelConfiguration": {"name": TIGHT_LEVEL}}}, kind="merge-patch")


def rejected(metrics: str) -> float:
    """Requests of the operator's user the API server rejected (429) since it started, from its own metrics."""
    return sum(v for k, v in by_label(metrics, "apiserver_flowcontrol_rejected_requests_total", "flow_schema").items()
               if k.startswith(FLOW_SCHEMA))


def restart_apiserver(cluster: FleetCluster, progress: controlplane.Progress) -> None:
    """SIGKILL the API server and start it again: every watch and connection of every client drops at once.

    Its metrics start again from zero: read what you need before."""
    from localcluster import procs

    rec = procs.load(cluster.sd.procs, "kube-apiserver")
    assert rec is not None
    procs.kill_now(rec)
    controlplane.up(cluster.sd, progress=progress)


def _operator_identity(sd: StateDir, api: Api) -> Path:
    """A client certificate for `dstj-operator`, bound to cluster-admin, and its kubeconfig."""
    ports = sd.load_ports()
    assert ports is not None
    path = sd.kubeconfigs / "operator.kubeconfig"
    kubeconfig.write(path, f"https://127.0.0.1:{ports.apiserver}", sd.pki / "ca.crt",
                     pki.issue(sd.pki, "dstj-operator", OPERATOR_USER), OPERATOR_USER)
    api.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": OPERATOR_USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}]})
    for fs in _flow_schemas():
        api.post("/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", fs)
    return path


def namespace(api: Api, name: str) -> None:
    """Create a namespace and wait for its default ServiceAccount (pods are refused before it)."""
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def has_sa() -> bool:
        try:
            api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            return True
        except Exception:
            return False

    wait_until(has_sa, timeout=60, what=f"the default ServiceAccount of {name}")


@contextmanager
def private_cluster(root: Path, fake_nodes: int, progress: controlplane.Progress) -> Iterator[FleetCluster]:
    """Start a control plane with `fake_nodes` untainted simulated nodes and no process nodes; stop it after."""
    sd = StateDir(root)
    sd.ensure()
    # Ports of its own, never the defaults: a developer's or a test session's cluster remembers those and
    # must still find them free when it next starts.
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    sd.save_ports(Ports(*sorted(ports)))
    sd.save_heartbeats(HEARTBEATS)
    try:
        kc = controlplane.up(sd, progress=progress, nodes_count=0)
        fakenodes.ensure(sd, fake_nodes, progress, taint=False)
        kube = Kubectl(kc, build.bin_dir())
        kube("apply", "--server-side", "-f", str(ROOT / CRD_FILE))
        # Polled, not `kubectl wait`: a CRD created a moment ago has no conditions yet, and kubectl fails on that.
        wait_until(lambda: kube("get", f"crd/{PLURAL}.{GROUP}", "-o",
                                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                                check=False).stdout == "True", timeout=60, what="the CRD to be established")
        api = Api(kc, pool_size=96)  # the trainers' 48 threads, the 16 deleters and the watches at once
        yield FleetCluster(sd, kube, api, _operator_identity(sd, api))
    finally:
        controlplane.down(sd, progress=lambda _: None)


@dataclass
class OperatorProcess:
    """The operator under test: its process and the port of its Prometheus metrics."""

    proc: subprocess.Popen[bytes]
    metrics_port: int

    def metrics(self) -> str:
        """Its /metrics text."""
        code, body = health.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        if code != 200:
            raise RuntimeError(f"operator /metrics answered {code}")
        return body


@contextmanager
def operator(cluster: FleetCluster, log: Path, env: dict[str, str] | None = None,
             memtrace: Path | None = None, tracemalloc: bool = False) -> Iterator[OperatorProcess]:
    """Run `python -m dstj_operator` as `dstj-operator` until the block ends; wait for its metrics endpoint.

    With `memtrace`, under a memory probe: SIGUSR1 writes its memory by part there (`benchmarks.fleet.memtrace`),
    by package too with `tracemalloc`."""
    port = free_port()
    full_env = os.environ | {"KUBECONFIG": str(cluster.operator_kubeconfig), "DSTJ_METRICS_PORT": str(port),
                             "DSTJ_HEALTH_PORT": "0"} | (env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        command = (["-m", "benchmarks.fleet.memtrace", str(memtrace), *(["--tracemalloc"] if tracemalloc else [])]
                   if memtrace else ["-m", "dstj_operator"])
        proc = subprocess.Popen([sys.executable, *command], stdout=out, stderr=subprocess.STDOUT,
                                env=full_env, cwd=ROOT)
    op = OperatorProcess(proc, port)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {proc.returncode}; see {log}")
            return health.get(f"http://127.0.0.1:{port}/metrics")[0] == 200

        # Under tracemalloc every import is traced: on a loaded machine the start alone took over a minute.
        wait_until(up, timeout=240 if tracemalloc else 60, what="the operator's metrics endpoint")
        yield op
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def job(name: str, workers: int) -> dict[str, Any]:
    """A job of `workers` workers; its pods land on simulated nodes, so nothing runs in them."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name},
            "spec": {"replicas": workers, "minReplicas": 1, "maxReplicas": workers, "image": "moe-trainer:fleet",
                     "trainer": {"model": {"preset": "tiny"},
                                 "data": {"source": "builtin", "tokenizer": "bytes"},
                                 "train": {"steps": 1_000_000, "globalBatch": 8, "microBatch": 1, "seqLen": 32}}}}
