"""``up`` is idempotent and ``down`` leaves nothing behind (on a second, private cluster).

This runs its own cluster in a temporary state directory, so it never stops a cluster a
developer (or the session fixture) is using; its ports and pod network are chosen free beside
the default one's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localcluster import controlplane, nodes, procs
from localcluster.kubectl import Kubectl
from localcluster.nodeagent import cgroups
from localcluster.state import StateDir
from localcluster.waiting import wait_until
from tests.cluster.kobjects import apply, container_pid, phase, pod, process_alive, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (independent of our own records)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _leftovers(sd: StateDir, bridge: str) -> list[str]:
    """Everything of this cluster still on the machine: processes, namespaces, mounts, links."""
    tag = sd.tag
    found = [f"process {pid}" for pid in _processes_mentioning(str(sd.root))]
    found += [f"netns {p.name}" for p in Path("/run/netns").glob(f"lc-{tag}-*")]
    found += [f"/etc/netns/{p.name}" for p in Path("/etc/netns").glob(f"lc-{tag}-*")]
    found += [f"link {bridge}"] if Path(f"/sys/class/net/{bridge}").exists() else []
    cg = cgroups.cluster_dir(tag)
    found += [f"cgroup {cg}"] if cg is not None and cg.exists() else []
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            if str(sd.root) in mountinfo.read_text():
                found.append(f"mount in {mountinfo}")
        except OSError:
            continue
    return found


def test_up_twice_then_down_leaves_no_process_namespace_or_mount_behind(bin_dir: Path, tmp_path: Path) -> None:
    with_nodes = nodes.prerequisites() is None
    sd = StateDir(tmp_path / "state")
    pod_pids: list[int] = []
    try:
        kubeconfig = controlplane.up(sd, nodes_count=1 if with_nodes else 0)
        pids = {name: pid for name, pid, _, _ in controlplane.status(sd)}

        start = time.monotonic()
        assert controlplane.up(sd, nodes_count=1 if with_nodes else 0) == kubeconfig
        assert time.monotonic() - start < 2.0, "a second up must find the running cluster"
        rows = controlplane.status(sd)
        assert all(alive and healthy for _, _, alive, healthy in rows), rows
        assert {name: pid for name, pid, _, _ in rows} == pids, "a second up must not restart anything"
        # With nodes: one agent per node, and the volume provisioner.
        extra = 2 if with_nodes else 0
        assert len(_processes_mentioning(str(sd.root))) == len(controlplane.COMPONENTS) + extra
        net = sd.load_network()
        assert net is not None
        if with_nodes:
            # A pod with a volume and a forked child: all of it must go with ``down``.
            kube = Kubectl(kubeconfig, bin_dir)
            busy = pod("busy", "sleep 300 & sleep 300", volumes=[{"name": "v", "emptyDir": {}}],
                       container={"volumeMounts": [{"name": "v", "mountPath": "/lc-test-volume"}]})
            wait_until(lambda: kube("get", "sa", "default", check=False).returncode == 0, timeout=30,
                       what="the default ServiceAccount")
            apply(kube, "default", busy)
            running = wait_for(kube, "pod", "busy", "default", lambda p: phase(p) == "Running")
            pod_pids.append(container_pid(running))
            assert _leftovers(sd, net.bridge), "the pod should have made a namespace, cgroup and bridge"
    finally:
        records = procs.load_all(sd.procs)
        stopped = controlplane.down(sd)

    assert stopped == len(controlplane.COMPONENTS) + extra
    assert not any(procs.is_alive(r) for r in records)
    assert _leftovers(sd, net.bridge) == []
    assert not [pid for pid in pod_pids if process_alive(pid)], "pod processes must be gone"
    assert not Path("/lc-test-volume").exists(), "mount points pods created are removed"
    assert not sd.root.exists()


def test_down_on_a_directory_that_is_not_a_cluster_refuses_to_delete_it(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")

    with pytest.raises(RuntimeError, match="does not look like"):
        controlplane.down(StateDir(precious))

    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_down_unmounts_a_bind_mount_in_the_state_dir_and_keeps_the_mounted_files(tmp_path: Path) -> None:
    source = tmp_path / "hostpath"
    source.mkdir()
    (source / "data.txt").write_text("user data")
    sd = StateDir(tmp_path / "state")
    sd.ensure()
    target = sd.root / "pods" / "p1" / "volume"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)

    controlplane.down(sd)

    assert not sd.root.exists()
    assert (source / "data.txt").read_text() == "user data"
    assert str(sd.root) not in Path("/proc/self/mountinfo").read_text()


def test_a_cluster_whose_node_agents_run_another_checkouts_python_is_told_apart(tmp_path: Path) -> None:
    # Node agents run pods with their own interpreter: a cluster kept from another clone must not be
    # reused as if it ran this one (the session fixture restarts it).
    sd = StateDir(tmp_path / "state")
    sd.ensure()
    other = tmp_path / "other-clone" / ".venv" / "bin" / "python"
    other.parent.mkdir(parents=True)
    other.symlink_to(sys.executable)
    ours = procs.spawn(sd.procs, nodes.AGENT + "node-1", [sys.executable, "-c", "import time; time.sleep(60)"],
                       sd.logs / "ours.log")
    try:
        assert controlplane.foreign_interpreter(sd) is None
        theirs = procs.spawn(sd.procs, nodes.AGENT + "node-2", [str(other), "-c", "import time; time.sleep(60)"],
                             sd.logs / "theirs.log")
        try:
            assert controlplane.foreign_interpreter(sd) == str(other)
        finally:
            procs.kill_now(theirs)
    finally:
        procs.kill_now(ours)
