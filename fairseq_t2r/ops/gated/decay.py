"""A per-head decay: the gated state (``chunked.py``) with one fixed or learned g_h in (0, 1) per
head, the same at every position (RetNet, SUPRA; Mao 2022's decaying fast weights):

    S_i = g_h S_{i-1} + phi_k_i v_i^T,    z_i = g_h z_{i-1} + phi_k_i

It has no forms of its own: its per-token log-gates (``decay_log_gates``) go to the gated forms
(``causal_gated``, ``gated_step``, under the one signature), whose chunked form builds the decay
matrix D_ij = g_h^(i - j) for j <= i in log space (exp((i - j) log g_h)). A padded position does
not decay: its log-gate is 0 as its features are, so it leaves the state as if it were absent.
"""
from typing import Optional

import torch
from torch import Tensor


def decay_log_gates(log_decay: Tensor, batch: int, length: int, key_padding_mask: Optional[Tensor] = None) -> Tensor:
    """Per-token log-gates (B, H, T) of the per-head log decays ``log_decay`` (H,), 0 at padded
    positions (``key_padding_mask`` (B, >= T), True where padded; its last T columns)."""
    log_g = log_decay.view(1, -1, 1).expand(batch, -1, length)
    if key_padding_mask is None:
        return log_g
    return log_g.masked_fill(key_padding_mask[:, None, -length:].to(torch.bool), 0.0)
