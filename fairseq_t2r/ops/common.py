"""What every form shares: the defaults, the state type, the precision rule, the padding rule.

Layout everywhere: head-major ``phi_q`` (B, H, T, F), ``phi_k`` (B, H, S, F), ``v`` (B, H, S, D),
where phi_q and phi_k are the feature-mapped queries and keys and F the feature dimension.
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

DEFAULT_EPS = 0.01  # the original T2R code clamps the denominator at 0.01
DEFAULT_CHUNK_SIZE = 64

State = Tuple[Tensor, Tensor]  # (S: (B, H, F, D), z: (B, H, F)): sum of phi_k v^T and of phi_k


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the sums for inputs of ``dtype``: fp32 for half precision (a running sum of
    thousands of positive terms overflows / loses precision in fp16), the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def autocast_off(fn):
    """Runs ``fn`` with torch.autocast disabled on its first tensor argument's device. The forms
    pick their own precision (sums in fp32 for half inputs); under autocast (fairseq ``--amp``)
    each matmul would be re-cast on its own and the dtypes would no longer agree."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next(a for a in args if isinstance(a, Tensor)).device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device_type=device, enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def causal_mask(T: int, S: int, device) -> Tensor:
    """(T, S) bool, True where query i must not see key j (j > i); T == S for self-attention."""
    return torch.ones(T, S, dtype=torch.bool, device=device).triu_(1)


def mask_padded_keys(phi_k: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """phi_k (B, H, S, F) with the features of padded keys zeroed; key_padding_mask (B, S), True
    where padded. A zero feature vector adds nothing to the sums, so padding needs no other
    special case in any form."""
    if key_padding_mask is None:
        return phi_k
    return phi_k.masked_fill(key_padding_mask[:, None, :, None].to(torch.bool), 0.0)
