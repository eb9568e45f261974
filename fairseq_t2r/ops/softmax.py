"""The softmax attention that attention transfer fits the linear forms to (its target).

Computes what fairseq's ``MultiheadAttention`` computes from the same (already projected,
query-scaled) q, k, v: scores in the input dtype, masked positions at -inf, softmax in fp32
(``fairseq.utils.softmax``), weights cast back to the input dtype before the product with v. No
attention dropout: the transfer target is the deterministic softmax output. The linear side of
the comparison is any causal form or, for the optional cross-entropy between the two
attentions' weights, ``quadratic.linear_attention_weights``.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .common import causal_mask


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None, causal: bool = False
) -> Tuple[Tensor, Tensor]:
    """q (B, H, T, D), k/v (B, H, S, D), key_padding_mask (B, S) True = pad. Returns
    (out (B, H, T, D) in v's dtype, fp32 weights (B, H, T, S))."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    if causal:
        scores = scores.masked_fill(causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :].to(torch.bool), float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1)
    # a query that may see no key at all (only possible with left-padded causal input) gets NaN
    # in fairseq; here it attends to nothing, so a padded row cannot turn later rows into NaN
    weights = weights.masked_fill(weights.isnan(), 0.0)
    return torch.matmul(weights.type_as(scores), v), weights
