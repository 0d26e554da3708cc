"""AdamW over the optimizer pieces this rank owns, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from dstj_api import OptimConfig
from moe_trainer.parallel.zero import StatePlan


def build_optimizer(plan: StatePlan, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the pieces this rank owns (`parallel/zero.py`), with weight decay on matrices only (norm
    gains are exempt; the router bias is a buffer, never stepped). AdamW is elementwise, so stepping a piece
    is stepping its part of the parameter: the update does not depend on how the state is sharded."""
    owned = [(p.param, p.source.ndim >= 2) for p in plan.owned if p.param is not None]
    decay = [param for param, matrix in owned if matrix]
    no_decay = [param for param, matrix in owned if not matrix]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=False,
    )


def warm_up_optimizer() -> None:
    """Make and step a throwaway AdamW like `build_optimizer`'s. The first optimizer of a process imports
    torch._dynamo, with sympy and triton (2.4 CPU-seconds here, more than the model takes): a worker pays for it
    before it says it is ready to join, not inside a group whose members would wait for it."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([param], foreach=False)
    param.grad = torch.zeros(1)
    opt.step()


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to min_lr_ratio * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Apply `lr` to every parameter group."""
    for group in opt.param_groups:
        group["lr"] = lr
