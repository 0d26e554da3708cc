"""The operator on the local cluster: time to Running and to the first step, worker replacement and
recovery, goodput under preemption every 60 s, and the operator's CPU and memory over 50 small jobs.

The operator runs as a process here (as in the operator tests) so its CPU time and memory can be
read from /proc; the jobs' pods are real pods on process nodes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dstj_api.contract import GROUP, INDEX_LABEL, JOB_LABEL, KIND, ROLE_LABEL, VERSION
from dstj_operator.crd import CRD_FILE, PLURAL
from localcluster import build, controlplane
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir, default_state_dir, session_lock
from localcluster.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "standin"
WORKERS = f"{ROLE_LABEL}=worker"
PREEMPT_EVERY_S = 60.0


def _job(ns: str, name: str, workdir: Path, steps: int, replicas: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "minReplicas": 1, "maxReplicas": 4, "image": "moe-trainer:bench",
                     "checkpoint": {"hostPath": str(workdir / name)},
                     "trainer": {"model": {"preset": "tiny", "vocabSize": 256},
                                 "train": {"steps": steps, "globalBatch": 8, "microBatch": 2, "seqLen": 32,
                                           "logEvery": 1},
                                 "data": {"source": "builtin", "tokenizer": "bytes"},
                                 "checkpoint": {"interval": 10}}} | spec}


def _status(kube: Kubectl, ns: str, name: str) -> dict[str, Any]:
    out = kube("get", PLURAL, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}


def _pods(kube: Kubectl, ns: str, selector: str) -> list[dict[str, Any]]:
    out = kube("get", "pods", "-n", ns, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _training_past(kube: Kubectl, ns: str, name: str, step: int, generation: int = -1) -> dict[str, Any] | None:
    s = _status(kube, ns, name)
    p, gen = s.get("progress") or {}, (s.get("membership") or {}).get("generation", -1)
    return p if p.get("step", 0) > step and p.get("generation") == gen > generation else None


def _replaced(kube: Kubectl, ns: str, index: str, old: str) -> bool:
    return any(q["metadata"]["labels"][INDEX_LABEL] == index and q["metadata"]["name"] != old
               for q in _pods(kube, ns, WORKERS))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def _operator(kube: Kubectl, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {"KUBECONFIG": str(kube.kubeconfig), "DSTJ_METRICS_PORT": "0", "DSTJ_HEALTH_PORT": "0"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dstj_operator"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def _namespace(kube: Kubectl, name: str) -> str:
    kube("create", "namespace", name)
    wait_until(lambda: kube("get", "sa", "default", "-n", name, check=False).returncode == 0, timeout=30,
               what="the namespace's ServiceAccount")
    return name


def start_and_replace(kube: Kubectl, workdir: Path, rounds: int = 3) -> dict[str, float]:
    """Apply -> all workers Running -> first step; then `rounds` worker deletions, each timed to the
    replacement pod's creation and to training resumed in the next generation."""
    ns, name = _namespace(kube, f"bench-op-{os.urandom(2).hex()}"), "startup"
    t0 = time.monotonic()
    kube("apply", "-f", "-", stdin=json.dumps(_job(ns, name, workdir, 100000, 3)))
    wait_until(lambda: len([p for p in _pods(kube, ns, WORKERS) if p["status"].get("phase") == "Running"]) == 3,
               timeout=120, interval=0.05, what="3 workers Running")
    running = time.monotonic() - t0
    p = wait_until(lambda: _training_past(kube, ns, name, 0), timeout=300, interval=0.2, what="the first step")
    first = time.monotonic() - t0
    created, resumed = [], []
    for _ in range(rounds):
        gen = _status(kube, ns, name)["membership"]["generation"]
        victim = _pods(kube, ns, WORKERS)[0]["metadata"]
        index = victim["labels"][INDEX_LABEL]
        t0 = time.monotonic()
        kube("delete", "pod", victim["name"], "-n", ns, "--wait=false")
        wait_until(lambda: _replaced(kube, ns, index, victim["name"]),  # noqa: B023 - called at once
                   timeout=30, interval=0.02, max_interval=0.02, what="the replacement pod")
        created.append(time.monotonic() - t0)
        p = wait_until(lambda: _training_past(kube, ns, name, p["step"], gen), timeout=120, interval=0.1,  # noqa: B023
                       max_interval=0.1, what="training resumed")
        resumed.append(time.monotonic() - t0)
        wait_until(lambda: (_status(kube, ns, name).get("membership") or {}).get("worldSize") == 3, timeout=60,
                   what="the replacement to join")
    kube("delete", "namespace", ns, "--wait=false")
    return {"apply_to_all_running_s": running, "apply_to_first_step_s": first,
            "delete_to_replacement_created_s": statistics.median(created),
            "delete_to_training_resumed_s": statistics.median(resumed)}


def _run_to_end(kube: Kubectl, ns: str, name: str, workdir: Path, steps: int,
                every: float | None) -> tuple[float, int]:
    kube("apply", "-f", "-", stdin=json.dumps(_job(ns, name, workdir, steps, 3)))
    wait_until(lambda: _training_past(kube, ns, name, 0), timeout=300, interval=0.2, what="the first step")
    t0, next_kill, kills = time.monotonic(), time.monotonic() + (every or 1e9), 0
    while _status(kube, ns, name).get("phase") != "Succeeded":
        if time.monotonic() >= next_kill:
            victims = _pods(kube, ns, f"{JOB_LABEL}={name},{WORKERS}")
            if victims:
                kube("delete", "pod", victims[kills % len(victims)]["metadata"]["name"], "-n", ns, "--wait=false")
                kills += 1
            next_kill += every or 1e9
        if time.monotonic() - t0 > 1800:
            raise TimeoutError(f"{name} did not finish in 30 min")
        time.sleep(0.5)
    return time.monotonic() - t0, kills


def goodput(kube: Kubectl, workdir: Path, steps: int = 400, rounds: int = 2) -> dict[str, float]:
    """Useful steps per second of a run preempted every 60 s, relative to an unpreempted run of the same steps.

    Runs alternate (plain, preempted, plain, preempted) so drift on the shared machine hits both alike; 400
    steps last several preemption periods, so the figure is not one preemption's luck.
    """
    ns = _namespace(kube, f"bench-goodput-{os.urandom(2).hex()}")
    plain, preempted, kills = [], [], []
    for r in range(rounds):
        plain.append(_run_to_end(kube, ns, f"plain-{r}", workdir, steps, None)[0])
        wall, k = _run_to_end(kube, ns, f"preempted-{r}", workdir, steps, PREEMPT_EVERY_S)
        preempted.append(wall)
        kills.append(k)
    kube("delete", "namespace", ns, "--wait=false")
    ratios = [p / q for p, q in zip(plain, preempted, strict=True)]
    return {"steps": steps, "unpreempted_wall_s": statistics.median(plain),
            "preempted_wall_s": statistics.median(preempted), "preemptions_per_run": statistics.median(kills),
            **{f"goodput_round_{r}": v for r, v in enumerate(ratios)},
            "goodput_vs_unpreempted": statistics.median(ratios)}


def fifty_jobs(kube: Kubectl, operator_pid: int, workdir: Path, jobs: int = 50) -> dict[str, float]:
    """The operator's CPU and memory while it brings up `jobs` one-worker jobs whose worker is a
    torch-free stand-in reporting progress every 5 s (the rendezvous pods are real)."""
    ns = _namespace(kube, f"bench-fifty-{os.urandom(2).hex()}")
    standin = {"pod": {"env": [{"name": "PYTHONPATH", "value": str(STANDIN)}]}}
    cpu0, rss0, t0 = _cpu_seconds(operator_pid), _rss_mib(operator_pid), time.monotonic()
    peak = rss0
    for i in range(jobs):
        kube("apply", "-f", "-", stdin=json.dumps(_job(ns, f"j{i:02d}", workdir, 1000000, 1, **standin)))

    def all_running() -> bool:
        nonlocal peak
        peak = max(peak, _rss_mib(operator_pid))
        phases = json.loads(kube("get", PLURAL, "-n", ns, "-o", "json").stdout)["items"]
        return sum(1 for j in phases if (j.get("status") or {}).get("phase") == "Running") == jobs

    wait_until(all_running, timeout=900, interval=1, max_interval=2, what=f"{jobs} jobs Running")
    up = time.monotonic() - t0
    cpu_up = _cpu_seconds(operator_pid) - cpu0
    cpu1, t1 = _cpu_seconds(operator_pid), time.monotonic()
    for _ in range(60):  # steady state: progress reports arriving, nothing to create
        peak = max(peak, _rss_mib(operator_pid))
        time.sleep(1)
    steady = (_cpu_seconds(operator_pid) - cpu1) / (time.monotonic() - t1)
    kube("delete", "namespace", ns, "--wait=false")
    return {"jobs": jobs, "all_running_s": up, "operator_cpu_s_bringing_up": cpu_up,
            "operator_cpu_cores_steady": steady, "operator_rss_mib_before": rss0, "operator_rss_mib_peak": peak}


def _print(title: str, numbers: dict[str, float]) -> None:
    print(f"\n{title}")
    for k, v in numbers.items():
        print(f"  {k:34} {v:10.3f}" if isinstance(v, float) else f"  {k:34} {v:10}")


def run(sections: tuple[str, ...] = ("start", "goodput", "fifty")) -> None:
    """Run on the machine's local cluster (started if needed, and stopped again if it was not running)."""
    print("\n## Operator on the local cluster (3 process nodes, tiny preset, CPU)")
    bins = build.bin_dir()
    sd = StateDir(default_state_dir())
    with session_lock(sd), tempfile.TemporaryDirectory(prefix="dstj-bench-") as tmp:
        was_running = all(alive for _, _, alive, _ in controlplane.status(sd))
        kube = Kubectl(controlplane.up(sd, progress=lambda _: None, nodes_count=3), bins)
        try:
            kube("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / CRD_FILE))
            work = Path(tmp)
            log = ROOT / "out" / "bench" / "operator.log"  # kept: the first place to look when a number is odd
            log.parent.mkdir(parents=True, exist_ok=True)
            with _operator(kube, log) as op:
                steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
                    ("start", lambda: start_and_replace(kube, work)),
                    ("goodput", lambda: goodput(kube, work)),
                    ("fifty", lambda: fifty_jobs(kube, op.pid, work)),
                ]
                for name, fn in steps:
                    if name in sections:
                        _print({"start": "start-up and worker replacement (goals: created < 1 s, resumed < 10 s)",
                                "goodput": f"goodput with a worker deleted every {PREEMPT_EVERY_S:.0f} s (goal > 0.9)",
                                "fifty": "operator alone over 50 one-worker jobs (stand-in workers)"}[name], fn())
        finally:
            if not was_running:
                controlplane.down(sd, progress=lambda _: None)


if __name__ == "__main__":
    run(tuple(sys.argv[1:]) or ("start", "goodput", "fifty"))
