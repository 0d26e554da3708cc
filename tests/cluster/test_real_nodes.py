"""Real nodes (upstream kubelet + containerd + runc) on a private cluster: pods in containers
resolve Services by name, reach them through kube-proxy and reach the API server through
``KUBERNETES_SERVICE_HOST``; a killed node goes NotReady and comes back with ``node add``; and
``down`` leaves no iptables chain, mount, cgroup, network namespace or kernel setting changed.

Each cluster here is private, in a temporary state directory (ports and pod network chosen free
beside any other cluster), so it never touches a cluster someone else uses. The ``down`` test
comes first: it counts every process of the node binaries, so no other real node may run then.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import baseimage, build, controlplane, faults, hostguard, nodes, realnodes
from localcluster.kubectl import Kubectl
from localcluster.nodeagent import cgroups
from localcluster.state import StateDir
from localcluster.waiting import wait_until
from tests.cluster.kobjects import apply, condition, phase, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PYTHON = baseimage.NAME
#: Kernel and network settings real nodes could change on the host.
SYSCTLS = (*realnodes.KERNEL_TUNABLES, "net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet",
           "net/bridge/bridge-nf-call-iptables", "net/netfilter/nf_conntrack_max",
           "net/netfilter/nf_conntrack_tcp_timeout_established",
           "net/netfilter/nf_conntrack_tcp_timeout_close_wait")
#: The chains a kubelet makes (kube-proxy's own ``--cleanup`` leaves them; ``down`` keeps those it found).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
#: Host paths a kubelet or containerd writes by default; real nodes keep theirs elsewhere.
DEFAULT_PATHS = ("/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/lib/cni", "/etc/cni",
                 "/var/log/pods", "/var/log/containers", "/opt/containerd", "/usr/libexec/kubernetes",
                 "/run/netns/cni-", "/etc/kubernetes")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real nodes unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"real nodes unavailable: {reason}")


@pytest.fixture(scope="module")
def node_bins() -> Path:
    why = realnodes.prerequisites()
    if why:
        _unavailable(why)
    try:
        build.bin_dir()
        return build.node_bin_dir()
    except build.BuildError as e:
        _unavailable(str(e))
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def python_image(node_bins: Path) -> Path:
    try:
        return baseimage.archive(lambda _m: None)
    except baseimage.BaseImageError as e:
        _unavailable(str(e))
    raise AssertionError("unreachable")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory short enough for unix socket paths below it (pytest's are not)."""
    d = Path(tempfile.mkdtemp(prefix="lc-real-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _up(sd: StateDir, python_image: Path, count: int) -> Kubectl:
    kubeconfig = controlplane.up(sd, real_nodes_count=count)
    for r in nodes.records(sd):
        realnodes.import_image(sd, r.name, python_image)
    return Kubectl(kubeconfig, build.bin_dir())


def _sysctls(names: tuple[str, ...] = SYSCTLS) -> dict[str, str | None]:
    values = {}
    for s in names:
        p = Path("/proc/sys") / s
        values[s] = p.read_text().strip() if p.exists() else None
    return values


def _host_state() -> dict[str, object]:
    """What real nodes could leave behind on the host, independent of our own records."""
    v1 = {str(d) for h in realnodes.v1_hierarchies() for d in h.glob("localcluster-*")}
    return {"sysctls": _sysctls(), "chains": hostguard.kube_chains(), "v1 cgroups": sorted(v1),
            "paths": sorted(p for p in DEFAULT_PATHS if Path(p).exists() or list(Path(p).parent.glob(
                Path(p).name + "*")))}


def _processes(*paths: Path) -> list[str]:
    """Processes whose command line names one of ``paths``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue
        if any(str(p).encode() in text for p in paths):
            command = text.replace(b"\0", b" ")[:120].decode(errors="replace")
            found.append(f"process {cmdline.parent.name}: {command}")
    return found


def _leftovers(sd: StateDir, bins: Path) -> list[str]:
    found = _processes(sd.root, bins)
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            if str(sd.root) in mountinfo.read_text():
                found.append(f"mount in {mountinfo}")
        except OSError:
            continue
    net = subprocess.run(["lsns", "-n", "-t", "net", "-o", "PATH,COMMAND"], capture_output=True, text=True,
                         check=False).stdout
    found += [f"netns {line}" for line in net.splitlines() if str(sd.root) in line or str(bins) in line]
    cg = cgroups.cluster_dir(sd.tag)
    found += [f"cgroup {cg}"] if cg is not None and cg.exists() else []
    return found


def _preexisting(before: dict[str, object], bins: Path) -> list[str]:
    """What of real nodes' host changes is there before this test starts a node: kube-proxy's
    KUBE- chains (its ``--cleanup`` in ``down`` removes them, so the host could not end as it began;
    a kubelet's own chains, left by a killed node, stay in the host record's baseline and compare equal),
    clusters registered with the host record, processes of the node binaries, and mounts of a
    node's pods or snapshots in the host's namespace."""
    chains = before["chains"]
    assert isinstance(chains, dict)
    found = [f"{table} chains: {' '.join(foreign)}" for table, names in chains.items()
             if (foreign := [n for n in names if n not in KUBELET_CHAINS])]
    found += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if any(m in line.split()[4] for m in ("/kubelet/pods/", "/containerd/io.containerd."))]
    found += [f"a cluster with real nodes registered in {hostguard.record_dir()}: state {d}"
              for d in hostguard.registered()]
    return found + _processes(bins)


def test_down_leaves_no_iptables_chain_mount_cgroup_netns_or_sysctl_behind(
        node_bins: Path, python_image: Path, short_tmp: Path) -> None:
    """The host must start clean of what real nodes change, or the test could not tell its own
    leftovers from another cluster's. It fails, naming them, rather than cleaning them: on a shared
    machine KUBE- chains may be a running cluster's Service routing (one recorded under another
    LOCALCLUSTER_LOCK, so not in this record), and deleting them would break it."""
    before = _host_state()
    found = _preexisting(before, node_bins)
    if found:
        pytest.fail("the host already has what real nodes change, before this test started any:\n  "
                    + "\n  ".join(found) + f"\nA cluster with real nodes runs or was killed without `down`: stop "
                    "it with `python -m localcluster --state DIR down` (DIR: its state, as listed above); chains "
                    f"whose cluster's state is gone: `{node_bins / 'kube-proxy'} --cleanup` removes them.",
                    pytrace=False)
    kernel = _sysctls(realnodes.KERNEL_TUNABLES)
    sd = StateDir(short_tmp / "state")
    try:
        kube = _up(sd, python_image, 1)
        apply(kube, "default", _python_pod("sleeper", "import time; time.sleep(300)"))
        wait_for(kube, "pod", "sleeper", "default", lambda p: phase(p) == "Running", timeout=60)
        during = _host_state()
        assert during["chains"] != before["chains"], "kube-proxy and the kubelet should have made chains"
        assert _leftovers(sd, node_bins), "the node's processes should show up"
        assert _sysctls(realnodes.KERNEL_TUNABLES) == kernel, "the kubelet's writes stay in its mount namespace"
    finally:
        controlplane.down(sd)

    wait_until(lambda: not _leftovers(sd, node_bins), timeout=10, what="the node's processes to be gone")
    assert _host_state() == before


@pytest.fixture(scope="module")
def real(node_bins: Path, python_image: Path) -> Iterator[tuple[StateDir, Kubectl]]:
    root = Path(tempfile.mkdtemp(prefix="lc-real-"))
    sd = StateDir(root / "state")
    try:
        yield sd, _up(sd, python_image, 1)
    finally:
        controlplane.down(sd)
        shutil.rmtree(root, ignore_errors=True)


def _python_pod(name: str, code: str, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [
        {"name": "main", "image": PYTHON, "imagePullPolicy": "Never", "command": ["python3", "-c", code]}]}
    labels = extra.pop("labels", {})
    spec |= extra
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


CLIENT = """
import os, socket, urllib.request
print("svc", socket.gethostbyname("web"))
print("headless", socket.gethostbyname("webh"))
print("named endpoint", socket.gethostbyname("web-0.webh"))
print("http", urllib.request.urlopen("http://web/", timeout=5).status)
api = (os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"]))
socket.create_connection(api, timeout=5).close()
print("api", api[0])
"""


def test_a_pod_on_a_real_node_resolves_services_reaches_them_and_reaches_the_api(
        real: tuple[StateDir, Kubectl]) -> None:
    _, kube = real
    server = _python_pod("web", "import http.server as h; h.test(h.SimpleHTTPRequestHandler, port=8080)",
                         labels={"app": "web"}, hostname="web-0", subdomain="webh", restartPolicy="Always")
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                 "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "webh"},
                 "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 8080}]}}]
    apply(kube, "default", server, *services)
    web = wait_for(kube, "pod", "web", "default", lambda p: condition(p, "Ready").get("status") == "True",
                   timeout=60)
    apply(kube, "default", _python_pod("client", CLIENT))
    done = wait_for(kube, "pod", "client", "default", lambda p: phase(p) in ("Succeeded", "Failed"), timeout=60)
    log = kube("logs", "client").stdout

    assert phase(done) == "Succeeded", log
    svc_ip = json.loads(kube("get", "svc", "web", "-o", "json").stdout)["spec"]["clusterIP"]
    pod_ip = web["status"]["podIP"]
    assert f"svc {svc_ip}" in log and f"headless {pod_ip}" in log and f"named endpoint {pod_ip}" in log
    assert "http 200" in log and "api 10.96.0.1" in log
    assert web["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")


def test_a_killed_real_node_goes_not_ready_and_node_add_brings_it_back(real: tuple[StateDir, Kubectl]) -> None:
    sd, kube = real
    name = realnodes.add(sd, labels={"localcluster.dev/test": "kill"})

    nodes.kill(sd, name)
    wait_for(kube, "node", name, None, lambda n: condition(n, "Ready").get("status") == "Unknown", timeout=30)
    assert not cgroups.pids(cgroups.node_dir(sd.tag, name)), "a killed node leaves no process"
    realnodes.add(sd, name)
    wait_for(kube, "node", name, None, lambda n: condition(n, "Ready").get("status") == "True", timeout=30)
    faults.reclaim(sd, name, lambda _m: None)

    assert kube("get", "node", name, check=False).returncode != 0
    assert name not in {r.name for r in nodes.records(sd)}
