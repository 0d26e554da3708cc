"""`make demo`: the whole product on the local cluster, start to finish, as a user would see it.

Starts the local cluster (building Kubernetes from source the first time), installs the operator
with the Helm chart, applies `examples/moe-tiny.yaml`, reclaims the node of one of its workers half
way (as a spot provider would: SIGTERM, pods deleted, node gone), brings the capacity back, and waits
for the job to succeed. Then prints the timeline and writes a picture of the run.

The cluster is stopped at the end (its operator would otherwise keep reconciling beside the test
suite's); `DEMO_KEEP=1 make demo` leaves it running to look around, `python -m localcluster down`
stops it later.

`DEMO_REAL_NODES=1 make demo` runs the same on two real nodes (kubelet, containerd, runc; a cluster
of its own, state ``<state>-real``) with the images built from the Dockerfiles (`make images`, the
first time ~6 min on a quiet machine) imported into them: the operator and the workers run as
containers, as on a user's cluster. The node is lost the portable way there, `kubectl drain` (what a
spot termination handler does), and uncordoned again, so it keeps its images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dstj_api.contract import JOB_LABEL, ROLE_LABEL, SHORT_NAME
from localcluster import build, controlplane, faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir, default_state_dir, session_lock
from localcluster.waiting import wait_until
from scripts import images
from scripts.timeline import JobWatcher

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "moe-tiny.yaml"
PICTURE = ROOT / "out" / "demo" / "moe-tiny.png"
RELEASE, OPERATOR_NS, JOB_NS = "deepseek-operator", "dstj-system", "default"


def say(text: str) -> None:
    """A progress line a person reads while waiting."""
    print(f"demo: {text}", flush=True)


def install_operator(kube: Kubectl, bins: Path) -> None:
    """`helm upgrade --install` the chart and wait for the operator to be Ready."""
    home = Path(tempfile.mkdtemp(prefix="dstj-helm-"))
    env = os.environ | {f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}
    subprocess.run([str(bins / "helm"), "upgrade", "--install", RELEASE, str(ROOT / "charts" / "deepseek-operator"),
                    "--kubeconfig", str(kube.kubeconfig), "--namespace", OPERATOR_NS, "--create-namespace",
                    "--wait", "--timeout", "5m"], check=True, env=env, stdout=subprocess.DEVNULL)
    shutil.rmtree(home, ignore_errors=True)


def worker_node(kube: Kubectl, job: str) -> str:
    """A node that runs one of the job's workers, preferably not the operator or the store too."""
    pods = json.loads(kube("get", "pods", "-A", "-o", "json").stdout)["items"]
    busy = {p["spec"].get("nodeName") for p in pods
            if p["metadata"]["namespace"] == OPERATOR_NS
            or p["metadata"].get("labels", {}).get(ROLE_LABEL) == "rendezvous"}
    workers = [p["spec"]["nodeName"] for p in pods if p["metadata"].get("labels", {}).get(
        ROLE_LABEL) == "worker" and p["metadata"]["labels"].get(JOB_LABEL) == job
        and p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]
    return next((n for n in workers if n not in busy), workers[0])


def up(real: bool, bins: Path) -> tuple[StateDir, Kubectl]:
    """The demo's cluster: three process nodes, or two real nodes with the product images imported."""
    if not real:
        say("1/5 the local cluster (the first run builds Kubernetes, etcd and helm from source: ~10 min)")
        sd = StateDir(default_state_dir())
        return sd, Kubectl(controlplane.up(sd, nodes_count=3), bins)
    say("1/5 the images from their Dockerfiles (the first run builds them: ~6 min on a quiet machine), then "
        "a local cluster of two real nodes (kubelet + containerd) with the images imported")
    built = images.build_all(lambda m: say(f"   {m}"))
    base = default_state_dir()
    sd = StateDir(base.with_name(base.name + "-real"))
    kube = Kubectl(controlplane.up(sd, real_nodes_count=2), bins)
    images.import_into(sd, built, lambda m: say(f"   {m}"))
    return sd, kube


def lose_node(sd: StateDir, kube: Kubectl, real: bool, node: str, job: str) -> None:
    """Take ``node``'s capacity away and give it back: a reclaimed process node comes back as a new
    one; a real node is drained and uncordoned (its images stay)."""
    if not real:
        faults.reclaim(sd, node, progress=lambda m: say(f"   {m}"))
        nodes.add(sd, node)
        return
    kube("drain", node, "--pod-selector", f"{JOB_LABEL}={job},{ROLE_LABEL}=worker", "--delete-emptydir-data",
         "--ignore-daemonsets", "--timeout=180s", timeout=200)
    say(f"   node {node} drained")
    kube("uncordon", node)


def main() -> int:
    """Run the demo; 0 when the job succeeded."""
    started = time.monotonic()
    real = os.environ.get("DEMO_REAL_NODES") == "1"
    job = yaml.safe_load(EXAMPLE.read_text())
    name, steps = job["metadata"]["name"], job["spec"]["trainer"]["train"]["steps"]
    # A replacement container on a real node imports torch from the image before it joins (~20 s):
    # losing the node a quarter of the way in leaves the job time to grow back.
    lose_at = steps // 4 if real else steps // 2
    bins = build.bin_dir()
    with session_lock(StateDir(default_state_dir())):
        sd, kube = up(real, bins)
        say(f"2/5 installing the operator with Helm (release {RELEASE} in {OPERATOR_NS})")
        install_operator(kube, bins)
        say(f"3/5 applying {EXAMPLE.relative_to(ROOT)}: {job['spec']['replicas']} workers, {steps} steps")
        kube("delete", SHORT_NAME, name, "-n", JOB_NS, "--ignore-not-found", "--wait=true", timeout=120)
        ckpt = Path(job["spec"]["checkpoint"]["hostPath"])
        if ckpt.exists():
            say(f"   removing an earlier demo's checkpoints in {ckpt} (a fresh run, not a resume)")
            shutil.rmtree(ckpt)
        watcher = JobWatcher(kube, JOB_NS, name).start()
        watcher.mark("kubectl apply")
        kube("apply", "-n", JOB_NS, "-f", str(EXAMPLE))

        def step() -> int:
            last = watcher.last()
            return last.step or 0 if last else 0

        wait_until(lambda: step() >= lose_at, timeout=900, interval=1, what=f"step {lose_at}")
        node = worker_node(kube, name)
        say(f"4/5 step {step()} of {steps}: {'draining' if real else 'reclaiming'} node {node}, which runs a worker")
        watcher.mark(f"node {node} {'drained' if real else 'reclaimed'}")
        lose_node(sd, kube, real, node, name)
        watcher.mark(f"node {node} back")
        say("5/5 waiting for the job to finish")
        wait_until(lambda: (w := watcher.last()) is not None and w.phase in ("Succeeded", "Failed"), timeout=900,
                   interval=1, what="the job to finish")
        watcher.stop()
        keep = os.environ.get("DEMO_KEEP") == "1"
        if not keep:
            controlplane.down(sd, progress=lambda _: None)
    last = watcher.last()
    assert last is not None
    print("\n== timeline ==\n" + watcher.timeline() + "\n")
    lost = "drained a quarter of the way, on real nodes" if real else "reclaimed half way"
    picture = watcher.picture(PICTURE, f"{name}: loss and world size (a node {lost})")
    print(f"== {name} {last.phase} in {time.monotonic() - started:.0f} s: step {last.step}, loss {last.loss:.3f}, "
          f"{last.preemptions} preemption(s), {last.crashes} crash(es) ==")
    print(f"picture of the run: {picture}")
    if keep:
        print(f"the cluster is still up: kubectl --kubeconfig {sd.admin_kubeconfig} get dstj -A; "
              f"stop it with: LOCALCLUSTER_STATE={sd.root} .venv/bin/python -m localcluster down")
    else:
        print("the local cluster was stopped (DEMO_KEEP=1 keeps it running)")
    return 0 if last.phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
