"""Settings only run time can check end the worker with EXIT_CONFIG and say what to change, not a crash loop."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dstj_api import EXIT_CONFIG, Membership, TrainerConfig
from dstj_api.contract import ENV_TERMINATION_LOG
from moe_trainer.checkpoint.storage import CheckpointStorage
from moe_trainer.misconfig import RunConfigError
from tests.trainer.elastic_harness import free_port


def _launch(tmp_path: Path, cfg: TrainerConfig, nproc: int = 1) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the worker supervisor once as a pod would; return the result and its termination-message file."""
    config, membership, message = tmp_path / "trainer.json", tmp_path / "membership.json", tmp_path / "message"
    config.write_text(cfg.model_dump_json(by_alias=True))
    membership.write_text(Membership(generation=0, world_size=1, members=["w0"]).model_dump_json(by_alias=True))
    proc = subprocess.run(
        [sys.executable, "-m", "moe_trainer.launch", "--config", str(config), "--member-id", "w0",
         "--membership", f"file:{membership}", f"--nproc-per-node={nproc}"],
        capture_output=True, text=True, timeout=120, env=os.environ | {ENV_TERMINATION_LOG: str(message)},
    )
    return proc, message


@pytest.mark.parametrize("nproc", [pytest.param(1, id="one process"),
                                   pytest.param(2, id="two local processes under the supervisor")])
def test_a_resume_from_that_holds_no_checkpoint_exits_78_with_the_fix_in_the_termination_message(
        tiny_config: TrainerConfig, tmp_path: Path, nproc: int) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tiny_config.model_copy(update={"checkpoint": tiny_config.checkpoint.model_copy(
        update={"dir": str(tmp_path / "ckpt"), "resume_from": str(empty)})})

    proc, message = _launch(tmp_path, cfg, nproc)

    assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
    text = message.read_text()
    assert f"checkpoint.resumeFrom {str(empty)!r}" in text and "spec.checkpoint.resumeFrom" in text
    assert "holds no checkpoint" in text and "unset it to start afresh" in text
    assert text in proc.stderr  # the log says it too


def _check_shared(rank: int, port: int, root: str, results: mp.Queue) -> None:  # type: ignore[type-arg]
    """One rank of a W=2 gloo group checks the checkpoint directory it was given."""
    import torch.distributed as dist

    from moe_trainer.checkpoint.checkpointer import check_shared

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        check_shared(CheckpointStorage(root), 0, rank, dist.new_group(backend="gloo"))
        results.put((rank, "shared"))
    except RunConfigError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def _ranks_see(dirs: list[Path]) -> dict[int, str]:
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    port = free_port()
    procs = [ctx.Process(target=_check_shared, args=(rank, port, str(d), results)) for rank, d in enumerate(dirs)]
    for p in procs:
        p.start()
    seen = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    return seen


def test_checkpoint_storage_the_workers_do_not_share_is_a_config_error_on_every_rank(tmp_path: Path) -> None:
    # Each rank has a directory of its own at the same path, as with a node-local hostPath.
    seen = _ranks_see([tmp_path / "node-a", tmp_path / "node-b"])
    assert seen.keys() == {0, 1}
    for text in seen.values():
        assert "is not shared between workers: 1 of 2 ranks" in text
        assert "ReadWriteMany PVC, a shared hostPath or an object-store URL" in text
    shared = _ranks_see([tmp_path / "shared", tmp_path / "shared"])
    assert shared == {0: "shared", 1: "shared"}
    assert not list((tmp_path / "shared").iterdir())  # the check leaves nothing behind
