"""The training form of window + linear attention: O(N W) work and memory, never (N, N).

- The window: queries in blocks of C (C = max(W, 64)); block [t0, t1) needs keys [t0-W+1, t1), i.e.
  its own block and the P = ceil((W-1)/C) before it (one, by default), so its scores are (C, (P+1) C)
  and a band mask keeps j in [i-W+1, i]. Per query: the window's max score m, sum exp(s - m) and
  sum exp(s - m) v (``window_parts``, an autograd Function with its own backward: ``band.py``).
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
from .band import WindowSums, blocks, hidden_slots
from .combine import sum_normalised


def _chunk(window: int, chunk: Optional[int]) -> int:
    return chunk or max(window, DEFAULT_CHUNK_SIZE)


def shift(x: Tensor, window: int) -> Tensor:
    """x (B, H, T, ...) delayed by ``window`` positions along T (zeros enter first): position i
    holds what position i - W held, so a causal form over it sees j <= i - W."""
    T = x.size(2)
    pad = x.new_zeros(*x.shape[:2], min(window, T), *x.shape[3:])
    return torch.cat([pad, x[:, :, : max(T - window, 0)]], dim=2)


_blocks = blocks


def window_parts(q: Tensor, k: Tensor, v: Tensor, window: int, key_padding_mask: Optional[Tensor] = None,
                 chunk: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """(m (B, H, T), sum exp(s - m) (B, H, T), sum exp(s - m) v (B, H, T, D)) over each query's window;
    m = -inf and both sums 0 where the window holds no valid key. All blocks at once (``band.py``)."""
    B, H, T, _ = q.shape
    C = min(_chunk(window, chunk), T)
    nb = -(-T // C)
    hidden = hidden_slots(T, window, C, key_padding_mask, q.device)
    m, den, num = WindowSums.apply(q, k, v, hidden, window, C)  # band.py
    return (m.reshape(B, H, nb * C)[:, :, :T], den.reshape(B, H, nb * C)[:, :, :T],
            num.reshape(B, H, nb * C, v.size(-1))[:, :, :T])


def shifted_linear(phi_q: Tensor, phi_k: Tensor, v: Tensor, window: int, chunk: Optional[int] = None):
    """(phi(q_i).S_i (B, H, T, D), phi(q_i).z_i (B, H, T)) of the additive state holding keys j <= i - W
    (phi_k already zero at padded keys): causal linear attention over the shifted stream, all blocks
    at once (each block's state is the exclusive cumulative sum of the earlier blocks')."""
    B, H, T, F = phi_q.shape
    C = min(_chunk(window, chunk), T)
    nb = -(-T // C)
    fq, fk, vv = _blocks(phi_q, C, nb), _blocks(shift(phi_k, window), C, nb), _blocks(shift(v, window), C, nb)
    a = torch.matmul(fq, fk.transpose(-1, -2)).tril()  # inclusive: shifted key t holds key t - W
    kv = torch.matmul(fk.transpose(-1, -2), vv)  # (B, H, nb, F, D): each block's sum
    S = torch.cumsum(kv, 2) - kv  # the earlier blocks'
    z = (torch.cumsum(fk.sum(3), 2) - fk.sum(3))[..., None]  # (B, H, nb, F, 1)
    num = torch.matmul(a, vv) + torch.matmul(fq, S)
    den = a.sum(-1) + torch.matmul(fq, z)[..., 0]
    return num.reshape(B, H, nb * C, -1)[:, :, :T], den.reshape(B, H, nb * C)[:, :, :T]


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
