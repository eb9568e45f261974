"""The training form of window + linear attention: O(N W) work and memory, never (N, N).

- The window: queries in blocks of C (C = max(W, 64)); block [t0, t1) needs keys [t0-W+1, t1), so
  its scores are (C, C+W-1) and a band mask keeps j in [i-W+1, i]. Per query: the window's max
  score m, sum exp(s - m) and sum exp(s - m) v (``window_parts``).
- The linear branch: the additive state on the stream delayed by W (``shift``: key j sits at
  position j+W), read by chunked causal linear attention: per block, the intra-block part
  (tril(phi_q phi_k'^T) v') plus the read of the running state of the earlier blocks.
- ``combine.sum_normalised`` joins them; ``windowed_softmax`` is the window alone (normalised),
  what ``combine.mix`` takes for the states without a sum normaliser.
Sums run in fp32 for half inputs (common.compute_dtype); outputs return in v's dtype.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..common import DEFAULT_CHUNK_SIZE, autocast_off, compute_dtype, mask_padded_keys
from .combine import sum_normalised


def _chunk(window: int, chunk: Optional[int]) -> int:
    return chunk or max(window, DEFAULT_CHUNK_SIZE)


def shift(x: Tensor, window: int) -> Tensor:
    """x (B, H, T, ...) delayed by ``window`` positions along T (zeros enter first): position i
    holds what position i - W held, so a causal form over it sees j <= i - W."""
    T = x.size(2)
    pad = x.new_zeros(*x.shape[:2], min(window, T), *x.shape[3:])
    return torch.cat([pad, x[:, :, : max(T - window, 0)]], dim=2)


def window_parts(q: Tensor, k: Tensor, v: Tensor, window: int, key_padding_mask: Optional[Tensor] = None,
                 chunk: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """(m (B, H, T), sum exp(s - m) (B, H, T), sum exp(s - m) v (B, H, T, D)) over each query's window;
    m = -inf and both sums 0 where the window holds no valid key."""
    T, C = q.size(2), _chunk(window, chunk)
    ms, dens, nums = [], [], []
    for t0 in range(0, T, C):
        t1, k0 = min(t0 + C, T), max(0, t0 - window + 1)
        s = torch.matmul(q[:, :, t0:t1], k[:, :, k0:t1].transpose(-1, -2))  # (B, H, C, R)
        i = torch.arange(t0, t1, device=q.device)[:, None]
        j = torch.arange(k0, t1, device=q.device)[None, :]
        hidden = (j > i) | (j <= i - window)
        if key_padding_mask is not None:
            hidden = hidden | key_padding_mask[:, None, None, k0:t1].bool()
        s = s.masked_fill(hidden, float("-inf"))
        m = s.amax(-1).detach()
        e = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m))[..., None])
        ms.append(m)
        dens.append(e.sum(-1))
        nums.append(torch.matmul(e, v[:, :, k0:t1]))
    return torch.cat(ms, 2), torch.cat(dens, 2), torch.cat(nums, 2)


def shifted_linear(phi_q: Tensor, phi_k: Tensor, v: Tensor, window: int, chunk: Optional[int] = None):
    """(phi(q_i).S_i (B, H, T, D), phi(q_i).z_i (B, H, T)) of the additive state holding keys j <= i - W
    (phi_k already zero at padded keys)."""
    pk, pv = shift(phi_k, window), shift(v, window)
    B, H, T, F = phi_q.shape
    C = _chunk(window, chunk)
    S = phi_q.new_zeros(B, H, F, v.size(-1))
    z = phi_q.new_zeros(B, H, F)
    nums, dens = [], []
    for t0 in range(0, T, C):
        t1 = min(t0 + C, T)
        fq, fk, vv = phi_q[:, :, t0:t1], pk[:, :, t0:t1], pv[:, :, t0:t1]
        a = torch.matmul(fq, fk.transpose(-1, -2)).tril()  # inclusive: shifted key t holds key t - W
        nums.append(torch.matmul(a, vv) + torch.matmul(fq, S))
        dens.append(a.sum(-1) + torch.matmul(fq, z[..., None])[..., 0])
        S = S + torch.matmul(fk.transpose(-1, -2), vv)
        z = z + fk.sum(2)
    return torch.cat(nums, 2), torch.cat(dens, 2)


@autocast_off
def windowed_linear(q: Tensor, k: Tensor, v: Tensor, phi_q: Tensor, phi_k: Tensor, window: int, log_factor: Tensor,
                    key_padding_mask: Optional[Tensor] = None, chunk: Optional[int] = None) -> Tensor:
    """Window softmax + additive linear branch in one normalised sum (LoLCATs' form, the package
    docstring). q, k, v (B, H, T, D), q scaled; phi_q, phi_k (B, H, T, F); log_factor (H,);
    key_padding_mask (B, T) True = pad. Returns (B, H, T, D) in v's dtype."""
    ct = compute_dtype(v.dtype)
    q, k, vv, phi_q, phi_k = (x.to(ct) for x in (q, k, v, phi_q, phi_k))
    m, d_win, n_win = window_parts(q, k, vv, window, key_padding_mask, chunk)
    n_lin, d_lin = shifted_linear(phi_q, mask_padded_keys(phi_k, key_padding_mask), vv, window, chunk)
    return sum_normalised(m, d_win, n_win, n_lin, d_lin, log_factor.to(ct)).to(v.dtype)


@autocast_off
def windowed_softmax(q: Tensor, k: Tensor, v: Tensor, window: int, key_padding_mask: Optional[Tensor] = None,
                     chunk: Optional[int] = None) -> Tensor:
    """The window alone: softmax over each query's last W keys (0 where it sees none)."""
    ct = compute_dtype(v.dtype)
    m, den, num = window_parts(q.to(ct), k.to(ct), v.to(ct), window, key_padding_mask, chunk)
    return (num / torch.where(den > 0, den, torch.ones_like(den))[..., None]).to(v.dtype)
