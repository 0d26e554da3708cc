"""Elastic runtime: recovery after a preemption and after an arrival, the process-restart floor,
the stall a periodic checkpoint causes, and throughput at W = 1, 2, 4 (tiny preset, CPU, gloo).

Local supervisors play the pods and this script plays the operator, as the tests do.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dstj_api import TrainerConfig
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.training.trainer import Trainer
from tests.trainer.elastic_harness import Cluster, free_port, wait_for

PROBE_NATIVE = {"torchrun native shrink, defaults": 42.8, "torchrun native shrink, last_call_timeout=1": 14.9}
"""Seconds from ../shared/probes/torchrun-elastic/README.md (torch 2.13, same machine kind)."""


def _config(workdir: Path, preset: str = "tiny", **train: Any) -> TrainerConfig:
    from pydoc_data.topics import topics

    corpus = workdir / "corpus.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)))
    return TrainerConfig.model_validate({
        "model": {"preset": preset, "vocabSize": 256},
        "train": {"steps": 400, "globalBatch": 12, "microBatch": 2, "seqLen": 32, "logEvery": 50} | train,
        "data": {"source": "path", "path": str(corpus), "tokenizer": "bytes", "minChars": 100},
        "checkpoint": {"dir": str(workdir / "ckpt"), "interval": 20},
    })


def _step_times(workdir: Path, generation: int) -> list[float]:
    return [json.loads(line)["time"] for p in workdir.glob(f"data-g{generation}-r*.jsonl")
            for line in p.read_text().splitlines()]


def _first_step_time(workdir: Path, generation: int) -> float | None:
    times = _step_times(workdir, generation)
    return min(times) if times else None


def recovery_seconds() -> dict[str, float]:
    """SIGTERM one of 3 workers -> first step at W=2; a new member -> first step at W=3; and for each,
    the pause the training saw (last step of the old generation -> first step of the new one)."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster = Cluster(workdir, _config(workdir), {"DSTJ_CACHE": str(workdir / "cache")})
        try:
            for m in "abc":
                cluster.start(m)
            g = cluster.publish(["a", "b", "c"])
            wait_for(lambda: _first_step_time(workdir, g) is not None, 120, "the first step at W=3")
            time.sleep(2)
            t0 = time.time()
            cluster.terminate("c")
            cluster.agents["c"].wait(60)  # the operator sees the pod go, then bumps the generation
            g = cluster.publish(["a", "b"])
            wait_for(lambda: _first_step_time(workdir, g) is not None, 120, "the first step at W=2")
            shrink = (_first_step_time(workdir, g) or 0) - t0
            shrink_pause = (_first_step_time(workdir, g) or 0) - max(_step_times(workdir, g - 1))
            time.sleep(2)
            cluster.start("d")
            t1 = time.time()  # the new pod is up: the operator bumps at once (a planned resize)
            g = cluster.publish(["a", "b", "d"], handoff=True)
            wait_for(lambda: _first_step_time(workdir, g) is not None, 120, "the first step at W=3 again")
            grow = (_first_step_time(workdir, g) or 0) - t1
            grow_pause = (_first_step_time(workdir, g) or 0) - max(_step_times(workdir, g - 1))
            pids = set(re.findall(r"generation \d+: rank \d+ of \d+ \(pid (\d+)\)", cluster.log("a")))
            same_process = pids == {str(cluster.agents["a"].pid)}
        finally:
            cluster.close()
    return {"sigterm_to_first_step_w2_s": shrink, "shrink_pause_s": shrink_pause,
            "arrival_to_first_step_w3_s": grow, "grow_pause_s": grow_pause, "same_process": float(same_process)}


def newcomer_start_seconds(repeats: int = 3) -> float:
    """Median wall seconds for a new worker process to import the trainer (torch, DCP): the part of an
    arrival that no reconfiguration can hide, since the newcomer is a new process."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import moe_trainer.launch"], check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


FLOOR_SCRIPT = """
import torch, torch.distributed as dist
dist.init_process_group("gloo"); t = torch.ones(1); dist.all_reduce(t); dist.destroy_process_group()
"""


def restart_floor_seconds(repeats: int = 3) -> float:
    """Median wall seconds of torchrun starting 2 processes that import torch, form gloo, all-reduce once."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(FLOOR_SCRIPT)
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                        f"--master-port={free_port()}", f.name], check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    os.unlink(f.name)
    return statistics.median(walls)


def _cpu_s() -> float:
    """CPU seconds this process has used, all threads together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


STALL_INTERVAL = 20
"""Steps per checkpoint in the whole-interval measure."""


def checkpoint_stall() -> dict[str, float]:
    """Step time, and the training-thread time of an async vs a sync save (small preset, 1 process); and
    the CPU a save costs against the CPU a step leaves idle, which says whether the save can hide."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["DSTJ_CACHE"] = str(workdir / "cache")
        cfg = _config(workdir, preset="small", steps=100, seqLen=64, microBatch=4, globalBatch=8)
        trainer = Trainer(cfg)
        trainer.train_step()
        steps, step_cpus = [], []
        for _ in range(5):
            start, cpu = time.perf_counter(), _cpu_s()
            trainer.train_step()
            steps.append(time.perf_counter() - start)
            step_cpus.append(_cpu_s() - cpu)
        step_s = statistics.median(steps)
        ckpt = Checkpointer(workdir / "ckpt", 2, 0, lambda final: True, 0, None)
        trainer.before_update = ckpt.before_update
        asyncs, syncs, with_save, save_cpus = [], [], [], []
        for i in range(3):
            start = time.perf_counter()
            ckpt.save(trainer.checkpoint_state(), 10 + 3 * i, asynchronous=True)
            trainer.train_step()  # overlaps the copy; waits for it only before the optimizer update
            with_save.append(time.perf_counter() - start)
            asyncs.append(ckpt.last_save_seconds)
            ckpt.wait()
            ckpt.save(trainer.checkpoint_state(), 11 + 3 * i, asynchronous=False)
            syncs.append(ckpt.last_save_seconds)
            cpu = _cpu_s()  # an async save alone, copy and write: the CPU it needs from somewhere
            ckpt.save(trainer.checkpoint_state(), 12 + 3 * i, asynchronous=True)
            ckpt.wait()
            save_cpus.append(_cpu_s() - cpu)
        # The whole cost of a periodic checkpoint: a checkpoint interval of steps with one save at its start
        # (finished by its end) against the same steps with none, taken in turn so drift hits all alike.
        intervals: dict[str, list[float]] = {"none": [], "async": [], "sync": []}
        step = 100
        for _ in range(3):
            for mode, seconds in intervals.items():
                step += 1
                start = time.perf_counter()
                if mode != "none":
                    ckpt.save(trainer.checkpoint_state(), step, asynchronous=mode == "async")
                for _ in range(STALL_INTERVAL):
                    trainer.train_step()
                ckpt.wait()
                seconds.append(time.perf_counter() - start)
        plain = statistics.median(intervals["none"])
        n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"step_s": step_s, "async_stall_s": statistics.median(asyncs), "sync_save_s": statistics.median(syncs),
            "step_with_async_save_s": statistics.median(with_save), "params_m": n_params / 1e6,
            "step_cores_busy": statistics.median(step_cpus) / step_s, "save_cpu_s": statistics.median(save_cpus),
            "interval_plain_s": plain,
            "interval_lost_async_s": statistics.median(intervals["async"]) - plain,
            "interval_lost_sync_s": statistics.median(intervals["sync"]) - plain}


def throughput() -> dict[int, float]:
    """Tokens/s of the tiny preset under torchrun at W = 1, 2, 4 (one machine, 2 cores)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cfg = _config(workdir, steps=30, globalBatch=16, microBatch=4)
        data = cfg.model_dump(by_alias=True)
        data["checkpoint"]["dir"] = None
        (workdir / "c.json").write_text(json.dumps(data))
        for world in (1, 2, 4):
            proc = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={world}",
                 f"--master-port={free_port()}", "-m", "moe_trainer.train", "--config", str(workdir / "c.json")],
                capture_output=True, text=True, check=True, env=os.environ | {"DSTJ_CACHE": str(workdir / "cache")},
            )
            summary = json.loads(next(line for line in proc.stdout.splitlines() if '"summary"' in line))
            out[world] = summary["tokens_per_s"]
    return out


def recovery_section() -> dict[str, Any]:
    """Print and return the recovery figures beside the restart floor and torchrun's native ones."""
    rec = recovery_seconds()
    floor = restart_floor_seconds()
    newcomer = newcomer_start_seconds()
    print("generations reconfigure in place: members keep their process, data and model, rebuild only the "
          f"process groups and reload the committed checkpoint (same PID across generations: "
          f"{bool(rec['same_process'])})")
    print(f"SIGTERM of 1 of 3 workers -> first step at W=2: {rec['sigterm_to_first_step_w2_s']:.2f} s (goal < 5 s); "
          f"pause, last step at W=3 -> first at W=2: {rec['shrink_pause_s']:.2f} s")
    print(f"new member arrives -> first step at W=3:        {rec['arrival_to_first_step_w3_s']:.2f} s (goal < 5 s); "
          f"pause, last step at W=2 -> first at W=3: {rec['grow_pause_s']:.2f} s")
    print(f"  of which the newcomer's own start (a new process importing the trainer): {newcomer:.2f} s")
    print(f"bare process-restart floor (torchrun, 2 procs, import torch + gloo + all-reduce): {floor:.2f} s "
          "(no longer paid by members that stay)")
    for name, secs in PROBE_NATIVE.items():
        print(f"{name} (probe, torch 2.13): {secs:.1f} s")
    return {"recovery": rec, "restart_floor_s": floor, "newcomer_start_s": newcomer}


def checkpoint_section() -> dict[str, float]:
    """Print and return the checkpoint stall: the training thread's wait, and the whole cost over an interval."""
    stall = checkpoint_stall()
    extra = stall["step_with_async_save_s"] / stall["step_s"] - 1
    print(f"checkpoint stall, small preset ({stall['params_m']:.1f} M params, step {stall['step_s']:.3f} s): "
          f"the training thread waits {stall['async_stall_s']:.3f} s for an async save "
          f"({100 * stall['async_stall_s'] / stall['step_s']:.1f}% of a step, goal < 5%); "
          f"a sync save stalls {stall['sync_save_s']:.3f} s ({100 * stall['sync_save_s'] / stall['step_s']:.0f}%)")
    print(f"  the step an async save overlaps takes {stall['step_with_async_save_s']:.3f} s "
          f"({100 * extra:+.0f}%: the save's CPU comes out of it)")
    idle = max(0.0, 2 - stall["step_cores_busy"]) * stall["step_s"]
    print(f"  why: a save costs {stall['save_cpu_s']:.3f} CPU-s (copy + DCP's per-tensor serialization + write) "
          f"while a step keeps {stall['step_cores_busy']:.2f} of 2 cores busy, leaving {idle:.3f} CPU-s idle per "
          "step: the rest comes out of the steps it overlaps")
    plain = stall["interval_plain_s"]
    for mode in ("async", "sync"):
        lost = stall[f"interval_lost_{mode}_s"]
        print(f"  whole cost of one {mode} save over a {STALL_INTERVAL}-step interval ({plain:.2f} s without): "
              f"{lost:+.3f} s = {100 * lost / stall['step_s']:+.0f}% of a step, "
              f"{100 * lost / plain:+.1f}% of the interval")
    return stall


def run(sections: tuple[str, ...] = ("recovery", "checkpoint", "throughput")) -> dict[str, Any]:
    """Print and return the elastic-runtime benchmark (all sections, or those named)."""
    print("\n## Elastic runtime (tiny preset, CPU, gloo; local supervisors, this script plays the operator)")
    print(f"machine load before: {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")
    out: dict[str, Any] = {}
    if "recovery" in sections:
        out |= recovery_section()
    if "checkpoint" in sections:
        out["checkpoint"] = checkpoint_section()
    if "throughput" in sections:
        tps = throughput()
        print("tokens/s, tiny preset: " + ", ".join(f"W={w}: {v:,.0f}" for w, v in tps.items()))
        out["tokens_per_s"] = tps
    return out


if __name__ == "__main__":
    run(tuple(sys.argv[1:]) or ("recovery", "checkpoint", "throughput"))
