"""The two attentions that attention transfer compares, as pure tensor functions.

Layout as in ``linear_attention``: ``q`` (B, H, T, D), ``k``/``v`` (B, H, S, D), head-major.

- ``softmax_attention``: what fairseq's ``MultiheadAttention`` computes from the same (already
  projected, query-scaled) q, k, v: scores in the input dtype, masked positions at -inf, softmax
  in fp32 (``fairseq.utils.softmax``), weights cast back to the input dtype before the product
  with v. No attention dropout: the transfer target is the deterministic softmax output.
- ``linear_attention_weights``: the (T, S) weight matrix of normalised linear attention (the
  quadratic form of ``linear_attention``), for the optional cross-entropy between the two
  attentions' weights. Quadratic in memory, like the softmax it is compared with.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .linear_attention import DEFAULT_EPS, compute_dtype


def _causal_mask(T: int, S: int, device) -> Tensor:
    """True where query i must not see key j (j > i); T == S for self-attention."""
    return torch.ones(T, S, dtype=torch.bool, device=device).triu_(1)


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None, causal: bool = False
) -> Tuple[Tensor, Tensor]:
    """(out (B, H, T, D) in v's dtype, fp32 weights (B, H, T, S)). key_padding_mask: (B, S), True = pad."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    if causal:
        scores = scores.masked_fill(_causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :].to(torch.bool), float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1)
    # a query that may see no key at all (only possible with left-padded causal input) gets NaN
    # in fairseq; here it attends to nothing, so a padded row cannot turn later rows into NaN
    weights = weights.masked_fill(weights.isnan(), 0.0)
    return torch.matmul(weights.type_as(scores), v), weights


def linear_attention_weights(
    phi_q: Tensor, phi_k: Tensor, causal: bool = False, eps: float = DEFAULT_EPS
) -> Tensor:
    """Normalised linear-attention weights (B, H, T, S); padded keys must already be zeroed in phi_k."""
    ct = compute_dtype(phi_q.dtype)
    weights = torch.matmul(phi_q.to(ct), phi_k.to(ct).transpose(-1, -2))
    if causal:
        weights = weights.masked_fill(_causal_mask(weights.size(-2), weights.size(-1), weights.device), 0.0)
    return weights / weights.sum(-1, keepdim=True).clamp(min=eps)
