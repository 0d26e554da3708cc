"""Multi-Token Prediction equals the paper's equations; with lambda = 0 training equals a run without it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dstj_api import ModelConfig, TrainerConfig
from moe_trainer.model.transformer import Transformer
from moe_trainer.training.trainer import Trainer


def _rms(v: torch.Tensor, norm: torch.nn.RMSNorm) -> torch.Tensor:
    return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + (norm.eps or 1e-6)) * norm.weight


def reference_mtp_logits(model: Transformer, tokens: list[int]) -> list[torch.Tensor]:
    """DeepSeek-V3 eqs. 21-23 for one sequence: per depth k and position i, h'_i from h^{k-1}_i and Emb(t_{i+k})."""
    S = len(tokens)
    emb = model.embed.weight
    h = model.forward_hidden(torch.tensor([tokens]))[0]  # h^0: the main model's last hidden states
    out = []
    for k, module in enumerate(model.mtp_modules(), start=1):
        rows = []
        for i in range(S - k):
            cat = torch.cat((_rms(h[i], module.hidden_norm), _rms(emb[tokens[i + k]], module.embed_norm)))
            rows.append(module.proj.weight @ cat)  # eq. 21
        h = module.block(torch.stack(rows)[None], model.rope_cos, model.rope_sin)[0]  # eq. 22: TRM_k
        out.append(_rms(h, module.norm) @ model.head.weight.T)  # eq. 23: the shared output head
    return out


def test_mtp_modules_equal_the_papers_equations() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(preset="tiny", vocab_size=64, n_layers=3, mtp_depth=2)
    model = Transformer(cfg).double()
    tokens = torch.randint(0, 64, (2, 12))
    out = model(tokens, with_mtp=True)
    assert [tuple(t.shape) for t in out.mtp_logits] == [(2, 11, 64), (2, 10, 64)]
    for b in range(2):
        for got, want in zip(out.mtp_logits, reference_mtp_logits(model, tokens[b].tolist()), strict=True):
            torch.testing.assert_close(got[b], want, rtol=1e-9, atol=1e-9)


def _with_model(cfg: TrainerConfig, **model: object) -> TrainerConfig:
    return TrainerConfig.model_validate(cfg.model_dump() | {"model": cfg.model.model_dump() | model})


def test_training_with_lambda_zero_equals_training_without_mtp(tiny_config: TrainerConfig) -> None:
    plain, zero = Trainer(tiny_config), Trainer(_with_model(tiny_config, mtp_depth=1, mtp_loss_weight=0.0))
    for _ in range(3):
        a, b = plain.train_step(), zero.train_step()
        assert a.loss == b.loss and a.mtp_loss is None and b.mtp_loss is not None
    main = zero.model.state_dict()
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, main[name]), name


def test_the_mtp_loss_is_normalised_by_the_global_token_count(tiny_config: TrainerConfig) -> None:
    cfg = _with_model(tiny_config, n_layers=3, mtp_depth=2, mtp_loss_weight=0.5)
    whole = Trainer(cfg)
    split = Trainer(TrainerConfig.model_validate(cfg.model_dump() | {"train": cfg.train.model_dump() | {
        "micro_batch": 2}}))
    batch = whole._batch(whole.train_data, whole.train_data.sample_ids(0, cfg.train.global_batch))
    with torch.no_grad():
        out = whole.model(batch[:, :-1], with_mtp=True)
    targets = batch[:, 1:]
    expected = sum(F.cross_entropy(lg.flatten(0, 1), targets[:, k:].flatten()).item()
                   for k, lg in enumerate(out.mtp_logits, start=1)) / 2
    a, b = whole.train_step(), split.train_step()
    assert abs(a.mtp_loss - expected) < 1e-5  # type: ignore[operator]
    assert abs(a.mtp_loss - b.mtp_loss) < 1e-5  # type: ignore[operator]
    assert a.mtp_accuracy is not None and 0.0 <= a.mtp_accuracy <= 1.0
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(value, split.model.state_dict()[name], rtol=1e-4, atol=1e-6)
