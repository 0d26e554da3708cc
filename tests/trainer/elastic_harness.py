"""Test harness for the elastic runtime: a rendezvous store, worker supervisors, and the test
playing the operator by publishing membership generations. All real processes (gloo)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from dstj_api import Membership, TrainerConfig, config_digest
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.checkpoint.storage import write_json_atomically
from moe_trainer.runtime.membership import FileMembershipSource
from moe_trainer.training.trainer import Trainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = defaultdict(list)
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children[parent].append(child)
    found, todo = [], [pid]
    while todo:
        for child in children[todo.pop()]:
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and all its descendants, as losing a node does."""
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def torchrun(probe: Path, world: int, *args: str) -> None:
    """Run `probe` under torchrun with `world` local processes; fail with the tail of its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={world}",
           f"--master-port={free_port()}", str(probe), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `condition` until true; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Cluster:
    """A store and named supervisors on this machine, sharing one membership file and checkpoint dir."""

    def __init__(self, workdir: Path, config: TrainerConfig, env: dict[str, str]) -> None:
        self.workdir, self.port = workdir, free_port()
        self.config_path = workdir / "config.json"
        self.config_path.write_text(config.model_dump_json(by_alias=True))
        self.membership = FileMembershipSource(workdir / "membership.json")
        self.env = os.environ | env | {"DSTJ_DATA_LOG": str(workdir), "PYTHONUNBUFFERED": "1"}
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.store = self._spawn("store", [sys.executable, "-m", "moe_trainer.rdzv_store", "--port", str(self.port)])
        self.generation = -1

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, member: str, nproc: int = 1) -> None:
        """Start a worker supervisor (a pod, in the cluster) running `nproc` local processes."""
        self.agents[member] = self._spawn(member, [
            sys.executable, "-m", "moe_trainer.launch", "--config", str(self.config_path), "--member-id", member,
            "--membership", f"file:{self.membership.path}", "--rdzv-endpoint", f"127.0.0.1:{self.port}",
            "--run-id", "test", f"--nproc-per-node={nproc}",
        ])

    def publish(self, members: list[str], handoff: bool = False, config: TrainerConfig | None = None) -> int:
        """Publish the next generation with these members (handoff: a planned resize, not a failure); `config`:
        it runs this config, written where the workers read it (an edit of the job's trainer config)."""
        previous = self.generation
        self.generation += 1
        digest = None
        if config is not None:
            text = config.model_dump_json(by_alias=True)
            write_json_atomically(self.config_path, text)
            digest = config_digest(text)
        self.membership.publish(Membership(
            generation=self.generation, world_size=len(members), members=members,
            handoff_from=previous if handoff and previous >= 0 else None, config_hash=digest,
        ))
        return self.generation

    def hard_kill(self, member: str) -> None:
        """SIGKILL a supervisor and everything it started (a node lost with its pods)."""
        kill_tree(self.agents[member].pid)
        self.agents[member].wait()

    def terminate(self, member: str) -> None:
        """SIGTERM a supervisor (a graceful preemption)."""
        self.agents[member].send_signal(signal.SIGTERM)

    def wait_all(self, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        codes = {}
        for name, proc in self.agents.items():
            codes[name] = proc.wait(max(1.0, deadline - time.monotonic()))
        return codes

    def close(self) -> None:
        for proc in [*self.agents.values(), self.store]:
            kill_tree(proc.pid)
            proc.wait()

    def log(self, member: str) -> str:
        return (self.workdir / f"{member}.log").read_text(errors="replace")


def committed_trajectory(log_dir: Path) -> dict[int, list[int]]:
    """For each step, the samples trained on by the newest generation that ran it (older runs of
    a step were replayed from a checkpoint and discarded)."""
    by_step: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for path in log_dir.glob("data-g*-r*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            by_step[rec["step"]][rec["generation"]].extend(rec["ids"])
    return {step: gens[max(gens)] for step, gens in sorted(by_step.items())}


def trajectory_errors(trajectory: dict[int, list[int]], expected: Callable[[int], list[int]], steps: int) -> list[str]:
    """Every way the committed trajectory differs from 'each step's samples exactly once'."""
    errors = []
    for step in range(1, steps + 1):
        got, want = sorted(trajectory.get(step, [])), sorted(expected(step))
        if got != want:
            missing = sorted(set(want) - set(got))
            dup = sorted({i for i in got if got.count(i) > 1})
            errors.append(f"step {step}: missing {missing}, repeated {dup}, unexpected {sorted(set(got) - set(want))}")
    return errors


def final_params(cfg: TrainerConfig) -> dict[str, torch.Tensor]:
    """The full model state of the committed checkpoint, loaded at W=1."""
    trainer = Trainer(cfg)
    ckpt = Checkpointer(cfg.checkpoint.dir or "", 1, 0, lambda final: False, rank=0, process_group=None)
    assert ckpt.load_latest(trainer.checkpoint_state()) is not None, "no committed checkpoint"
    trainer.restored()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def reference_run(cfg: TrainerConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Trainer]:
    """An uninterrupted run of `cfg` in this process at W=1: (start params, final params, the trainer)."""
    trainer = Trainer(cfg)
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(cfg.train.steps):
        trainer.train_step()
    return start, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, trainer


def relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b - start|| over all tensors: the elastic-equivalence measure."""
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a)
    den = sum(float(((b[k].double() - start[k].double()) ** 2).sum()) for k in a)
    return (num / den) ** 0.5
