"""Sliding-window causal attention that computes only the window's blocks.

Shape legend: B batch, H heads, S sequence, Dh head dim, C query-chunk length, K keys one chunk sees.

Query i sees keys j with 0 <= i - j < window. Queries are cut into chunks of C positions; chunk
[s, e) needs only keys [s - window + 1, e), so each chunk attends to at most C + window - 1 keys
instead of S. Time and score memory grow as S * (C + window) rather than S^2, and the result equals
the dense computation under the same mask (`masked_window_attention`, kept as the reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def band_mask(q_start: int, q_end: int, k_start: int, k_end: int, window: int, device: torch.device) -> Tensor:
    """`[q, k]` True where query position i may see key position j: 0 <= i - j < window."""
    dist = torch.arange(q_start, q_end, device=device)[:, None] - torch.arange(k_start, k_end, device=device)[None, :]
    return (dist >= 0) & (dist < window)


def masked_window_attention(q_BHSD: Tensor, k_BHSD: Tensor, v_BHSD: Tensor, window: int,
                            scale: float | None = None) -> Tensor:
    """The dense form: a full `[S, S]` score matrix with the band mask (the reference)."""
    S = q_BHSD.shape[2]
    return F.scaled_dot_product_attention(
        q_BHSD, k_BHSD, v_BHSD, attn_mask=band_mask(0, S, 0, S, window, q_BHSD.device), scale=scale
    )


def windowed_attention(q_BHSD: Tensor, k_BHSD: Tensor, v_BHSD: Tensor, window: int, chunk: int | None = None,
                       scale: float | None = None) -> Tensor:
    """Causal attention within `window` positions, computed over the band only, all chunks in one batch.

    The sequence is cut into N chunks of C positions (padded at the end); chunk n attends to the keys
    of chunks n-1 and n, `[N, C, 2C]` scores in all, which cover its window when C >= window - 1.
    `chunk` (C) defaults to the window, at least 16 positions (a tiny window is not worth tiny products).
    `v_BHSD` may have a different head dim from q and k (MLA's values do); `scale` defaults to 1/sqrt(q's).
    """
    B, S = q_BHSD.shape[0], q_BHSD.shape[2]
    if window >= S:
        return F.scaled_dot_product_attention(q_BHSD, k_BHSD, v_BHSD, is_causal=True, scale=scale)
    C = chunk or max(window, 16)
    if window - 1 > C:
        raise ValueError(f"chunk ({C}) must be at least window - 1 ({window - 1}) to cover the window")
    N = -(-S // C)
    pad = N * C - S

    def blocks(x: Tensor) -> Tensor:  # [B, H, S, d] -> [B, N, H, C, d], zero-padded at the end
        return F.pad(x, (0, 0, 0, pad)).unflatten(2, (N, C)).transpose(1, 2)

    def with_previous(x_BNHCD: Tensor) -> Tensor:  # keys of chunks n-1 and n: [B*N, H, 2C, d]
        prev = F.pad(x_BNHCD, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
        return torch.cat((prev, x_BNHCD), dim=3).flatten(0, 1)

    # Query r of chunk n sits at nC + r, key t of its pair at nC - C + t: distance r + C - t.
    r, t = torch.arange(C, device=q_BHSD.device)[:, None], torch.arange(2 * C, device=q_BHSD.device)[None, :]
    dist_CK = r + C - t
    mask_NCK = ((dist_CK >= 0) & (dist_CK < window)).expand(N, C, 2 * C).clone()
    mask_NCK[0, :, :C] = False  # chunk 0 has no previous chunk
    # Chunks fold into the batch: 4-D inputs take the fused CPU/GPU attention kernels, 5-D ones would not.
    o_bHCD = F.scaled_dot_product_attention(
        blocks(q_BHSD).flatten(0, 1), with_previous(blocks(k_BHSD)), with_previous(blocks(v_BHSD)),
        attn_mask=mask_NCK.repeat(B, 1, 1).unsqueeze(1), scale=scale,
    )
    return o_bHCD.unflatten(0, (B, N)).transpose(1, 2).flatten(2, 3)[:, :, :S]
