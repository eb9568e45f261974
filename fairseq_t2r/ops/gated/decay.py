"""A per-head decay: the gated state (``chunked.py``) with one fixed or learned g_h in (0, 1) per
head, the same at every position (RetNet, SUPRA; Mao 2022's decaying fast weights):

    S_i = g_h S_{i-1} + phi_k_i v_i^T,    z_i = g_h z_{i-1} + phi_k_i

Within a chunk the decay matrix is D_ij = g_h^(i - j) for j <= i, built in log space
(exp((i - j) log g_h)) by the gated chunked form. A padded position does not decay: its log-gate
is 0 as its features are (``decay_log_gates``), so it leaves the state as if it were absent.
"""
from typing import Optional

import torch
from torch import Tensor

from ..common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, State, autocast_off
from .chunked import causal_gated, gated_step


def decay_log_gates(log_decay: Tensor, batch: int, length: int, key_padding_mask: Optional[Tensor] = None) -> Tensor:
    """Per-token log-gates (B, H, T) of the per-head log decays ``log_decay`` (H,), 0 at padded
    positions (``key_padding_mask`` (B, T), True where padded)."""
    log_g = log_decay.view(1, -1, 1).expand(batch, -1, length)
    if key_padding_mask is None:
        return log_g
    return log_g.masked_fill(key_padding_mask[:, None, -length:].to(torch.bool), 0.0)


@autocast_off
def causal_decay(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    key_padding_mask: Optional[Tensor] = None,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    initial_state: Optional[State] = None,
    return_state: bool = False,
    normalize: bool = True,
):
    """phi_q/phi_k (B, H, T, F) (padded keys zeroed), v (B, H, T, D), log_decay (H,) = log g_h
    -> (B, H, T, D), or (out, state) with ``return_state``; as ``causal_gated``."""
    B, _, T, _ = phi_q.shape
    log_g = decay_log_gates(log_decay, B, T, key_padding_mask)
    return causal_gated(phi_q, phi_k, v, log_g, eps, chunk_size, initial_state, return_state, normalize)


def decay_step(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, log_decay: Tensor, state: State,
    eps: float = DEFAULT_EPS, normalize: bool = True, key_padding_mask: Optional[Tensor] = None,
):
    """One token (B, H, 1, *) with per-head log decays (H,); ``key_padding_mask`` (B, 1) or
    (B, t), its last column says whether this token is padding. -> (out, state)."""
    log_g = decay_log_gates(log_decay, phi_q.size(0), 1, key_padding_mask)
    return gated_step(phi_q, phi_k, v, log_g, state, eps, normalize)
