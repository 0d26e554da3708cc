"""Optimizer-state sharding (ZeRO-1): the unsharded update with a share of the state on each rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dstj_api import TrainerConfig
from tests.trainer.elastic_harness import torchrun

PROBE = Path(__file__).with_name("zero_probe.py")


@pytest.mark.slow
def test_sharded_state_gives_the_unsharded_update_bit_for_bit_with_a_share_of_the_memory(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    world, ep = 4, 2  # dense state over 4 ranks, each expert's over its 2 replicas (DP=2 with EP=1 and 3: test_elastic)
    data = tiny_config.model_dump()
    data["train"] |= {"global_batch": 8, "micro_batch": 2}
    config = tmp_path / "config.json"
    config.write_text(TrainerConfig.model_validate(data).model_dump_json())
    out = tmp_path / "out.json"
    torchrun(PROBE, world, str(config), str(ep), str(out), str(tmp_path / "ckpt"))
    ranks = json.loads(out.read_text())
    assert all(r["equal"] for r in ranks), "sharded and unsharded parameters differ"
    assert all(all(r["resumes"].values()) for r in ranks), [r["resumes"] for r in ranks]
    dp = world // ep
    for kind, share in (("dense", 1 / world), ("expert", 1 / dp)):
        unsharded = ranks[0]["unsharded"][kind]
        assert all(r["unsharded"][kind] == unsharded for r in ranks)
        # Each replica group holds the state exactly once, every rank near its even share of it.
        replica_groups = 1 if kind == "dense" else ep
        assert sum(r["sharded"][kind] for r in ranks) == unsharded * replica_groups
        assert max(r["sharded"][kind] for r in ranks) <= 1.25 * share * unsharded, (kind, ranks)
