"""The weight-matrix forms: build the normalised (T, S) linear-attention weights, then multiply
with v. Quadratic in memory; the fastest causal form for short sequences, and the only forms
that can apply fairseq-style dropout to the attention weights (dropout needs the weights)."""
from typing import Callable, Optional

import torch
from torch import Tensor

from ..common import DEFAULT_EPS, autocast_off, causal_mask, compute_dtype
from .step import attend_state, summarize_keys

WeightDropout = Optional[Callable[[Tensor], Tensor]]  # (B, H, T, S) weights -> dropped weights


def linear_attention_weights(
    phi_q: Tensor, phi_k: Tensor, causal: bool = False, eps: float = DEFAULT_EPS
) -> Tensor:
    """Normalised linear-attention weights (B, H, T, S) from phi_q (B, H, T, F), phi_k (B, H, S, F),
    in ``compute_dtype(phi_q.dtype)``: w_ij = phi_q_i . phi_k_j / max(sum_j' phi_q_i . phi_k_j', eps)
    over the keys query i may see. Padded keys must already be zeroed in phi_k. Attention
    transfer compares these with the softmax's weights."""
    ct = compute_dtype(phi_q.dtype)
    weights = torch.matmul(phi_q.to(ct), phi_k.to(ct).transpose(-1, -2))
    if causal:
        weights = weights.masked_fill(causal_mask(weights.size(-2), weights.size(-1), weights.device), 0.0)
    return weights / weights.sum(-1, keepdim=True).clamp(min=eps)


@autocast_off
def causal_quadratic(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS, weight_dropout: WeightDropout = None
) -> Tensor:
    """Causal self-attention from the (T, T) weights. phi_q/phi_k (B, H, T, F), v (B, H, T, D)
    -> (B, H, T, D) in v's dtype; ``weight_dropout`` is applied to the normalised weights."""
    out_dtype = v.dtype
    ct = compute_dtype(out_dtype)
    weights = linear_attention_weights(phi_q.to(ct), phi_k.to(ct), causal=True, eps=eps)
    if weight_dropout is not None:
        weights = weight_dropout(weights)
    return torch.matmul(weights, v.to(ct)).to(out_dtype)


@autocast_off
def noncausal(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS, weight_dropout: WeightDropout = None
) -> Tensor:
    """Every query sees every (non-padded) key: phi_q (B, H, T, F), phi_k (B, H, S, F),
    v (B, H, S, D) -> (B, H, T, D) in v's dtype. Without dropout the keys are reduced to (S, z)
    once (linear in both lengths); with dropout it builds the (T, S) weights."""
    if weight_dropout is None:
        return attend_state(phi_q, summarize_keys(phi_k, v), eps, out_dtype=v.dtype)
    ct = compute_dtype(v.dtype)
    weights = linear_attention_weights(phi_q.to(ct), phi_k.to(ct), eps=eps)
    return torch.matmul(weight_dropout(weights), v.to(ct)).to(v.dtype)
