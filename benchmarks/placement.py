"""Expert-parallel all-to-all at EP = 2 and 4: bytes and time, with and without group-aligned placement and
once-per-rank dispatch.

64 routed experts, top-6, dim 256, expert hidden 128, no shared expert, sigmoid routing (the `base` preset's),
2048 tokens of random activations per rank, fp32, EP = W real gloo processes (`torch.multiprocessing`).
Routing "free": nGroups 1; "limited": nGroups 8, topkGroups 2 with EP dividing nGroups, so a token's experts
live on at most 2 EP ranks. Dispatch:
- "per assignment": one row per (token, expert) each way, as the layer sent before (kept here as the baseline);
- "once per rank": the layer's `dispatch_once_per_rank`, one row per (token, destination rank) out with the
  expert ids and gates, one combined row back.
Bytes: what a rank hands to the all-to-alls for other ranks in one forward (the backward mirrors it), per
token, mean over ranks. Time: the layer's forward + backward and the part of it spent inside all-to-all calls
(waiting for peers included), median of interleaved repeats, the slowest rank's.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.timing import median_seconds
from dstj_api import MoEConfig
from moe_trainer.model.expert_parallel import ExpertShard, all_to_all
from moe_trainer.model.moe import MoE

E, K, DIM, HIDDEN, TOKENS = 64, 6, 256, 128, 2048
SCENARIOS = [("free", "per assignment"), ("free", "once per rank"), ("limited", "per assignment"),
             ("limited", "once per rank")]


def per_assignment_layer(moe: MoE, x_TD: torch.Tensor, shard: ExpertShard) -> tuple[torch.Tensor, int]:
    """The routed experts with one all-to-all row per (token, expert) each way; (output, bytes sent away)."""
    routing = moe.router(x_TD)
    flat_expert = routing.expert_TK.reshape(-1)
    order = torch.argsort(flat_expert, stable=True)  # no capacity limit here: every assignment is kept
    counts_E = torch.bincount(flat_expert, minlength=E)
    token_N = order // K
    R, L = shard.size, E // shard.size
    counts_RL = counts_E.view(R, L)
    recv_RL = torch.empty_like(counts_RL)
    dist.all_to_all_single(recv_RL, counts_RL.contiguous(), group=shard.group)
    send_R, recv_R = counts_RL.sum(1).tolist(), recv_RL.sum(1).tolist()
    x_MD = all_to_all(x_TD.index_select(0, token_N), recv_R, send_R, shard.group)
    local_M = torch.repeat_interleave(torch.arange(L).repeat(R), recv_RL.reshape(-1))
    order_M = torch.argsort(local_M, stable=True)
    y_sorted = moe.experts(x_MD.index_select(0, order_M), recv_RL.sum(0))
    y_ND = all_to_all(torch.empty_like(y_sorted).index_copy(0, order_M, y_sorted), send_R, recv_R, shard.group)
    weight_N1 = routing.gate_TK.reshape(-1)[order].unsqueeze(1)
    out_TD = torch.zeros_like(x_TD).index_add_(0, token_N, y_ND * weight_N1)
    row = DIM * 4
    away = sum(send_R) - send_R[shard.rank] + sum(recv_R) - recv_R[shard.rank]
    return out_TD, 8 * L * (R - 1) + away * row


class _A2ATimer:
    """Seconds spent inside `dist.all_to_all_single` (forward and backward), wrapped for this process."""

    def __init__(self) -> None:
        self.seconds, self._inner = 0.0, dist.all_to_all_single

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return self._inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        dist.all_to_all_single = timed  # type: ignore[assignment]


def _worker(rank: int, world: int, store: str, out: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    timer, shard = _A2ATimer(), ExpertShard(rank, world, None)
    layers, x = {}, torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(rank))
    for routing in ("free", "limited"):
        torch.manual_seed(0)
        cfg = MoEConfig(n_routed=E, top_k=K, expert_dim=HIDDEN, n_shared=0, score_func="sigmoid",
                        n_groups=8 if routing == "limited" else 1, topk_groups=2 if routing == "limited" else 1)
        layers[routing] = MoE(DIM, cfg)
        layers[routing].shard_experts(shard)
    sent: dict[tuple[str, str], int] = {}
    in_a2a: dict[tuple[str, str], list[float]] = {s: [] for s in SCENARIOS}

    def step(scenario: tuple[str, str]) -> None:
        moe, x_TD = layers[scenario[0]], x.clone().requires_grad_()
        timer.seconds = 0.0
        if scenario[1] == "per assignment":
            y, sent[scenario] = per_assignment_layer(moe, x_TD, shard)
        else:
            y, sent[scenario] = moe(x_TD), moe.last_a2a_bytes
        y.sum().backward()
        in_a2a[scenario].append(timer.seconds)

    secs = median_seconds({s: (lambda s=s: step(s)) for s in SCENARIOS}, repeats=5, warmup=1)
    a2a = {s: sorted(v)[len(v) // 2] for s, v in in_a2a.items()}
    out.put((rank, {s: (sent[s], secs[s], a2a[s]) for s in SCENARIOS}))
    dist.destroy_process_group()


def measure(world: int) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(routing, dispatch): (bytes per token, mean over ranks; layer seconds; seconds in all-to-all)},
    times the slowest rank's."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_worker, args=(r, world, store, out)) for r in range(world)]
        for p in procs:
            p.start()
        rows = [out.get() for _ in procs]
        for p in procs:
            p.join()
    return {s: (sum(r[s][0] for _, r in rows) / world / TOKENS, max(r[s][1] for _, r in rows),
                max(r[s][2] for _, r in rows)) for s in SCENARIOS}


def run() -> dict[int, Any]:
    """Print and return the table."""
    print(f"\n## Expert-parallel all-to-all, {E} experts top-{K}, dim {DIM}, {TOKENS} tokens per rank, fp32")
    print("| EP | routing | dispatch | bytes per token sent | vs free, per assignment | layer fwd+bwd ms | "
          "in all-to-all ms |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for world in (2, 4):
        got = measure(world)
        table[world] = got
        base = got[("free", "per assignment")][0]
        for (routing, dispatch), (per_token, secs, a2a) in got.items():
            name = "limited: 2 of 8 groups" if routing == "limited" else "free"
            print(f"| {world} | {name} | {dispatch} | {per_token:,.0f} B | {per_token / base:.2f}x | "
                  f"{secs * 1e3:.0f} | {a2a * 1e3:.0f} |")
    return table


if __name__ == "__main__":
    run()
