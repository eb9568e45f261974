"""The naive reference of the (gated) delta rule: token by token, the update written as the
matrix it is, S_i = g_i (I - beta_i k_i k_i^T) S_{i-1} + beta_i k_i v_i^T, out_i = S_i^T q_i.
Slow and obviously correct; independent of ``step.py`` and ``chunked.py`` (it shares only
``common.py``, and normalises the features itself), so a test comparing a fast form with it
checks the fast form and nothing else. Conventions (normalisation, padding): ``step.py``.
"""
from typing import Optional

import torch
from torch import Tensor

from ..common import autocast_off, compute_dtype


@autocast_off
def delta_reference(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor],
    beta: Tensor,
    *,
    eps: float = 1e-6,
    initial_state: Optional[Tensor] = None,
    return_state: bool = False,
):
    """phi_q/phi_k (B, H, T, F), v (B, H, T, D), log_g (B, H, T) the log forget gate (None:
    g = 1), beta (B, H, T) ->
    out (B, H, T, D) in v's dtype, unnormalised; with ``return_state`` (out, S (B, H, F, D)).
    Features are divided by sqrt(||phi||^2 + eps^2); the state is in ``compute_dtype``."""
    B, H, T, F = phi_k.shape
    ct = compute_dtype(v.dtype)
    S = v.new_zeros(B, H, F, v.size(-1), dtype=ct) if initial_state is None else initial_state.to(ct)
    eye = torch.eye(F, dtype=ct, device=v.device)
    outs = []
    for t in range(T):
        q, k = (x[:, :, t].to(ct) for x in (phi_q, phi_k))  # (B, H, F)
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + eps**2)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + eps**2)
        b = beta[:, :, t].to(ct)[..., None, None]
        g = 1.0 if log_g is None else torch.exp(log_g[:, :, t].to(ct))[..., None, None]
        erase = eye - b * k.unsqueeze(-1) * k.unsqueeze(-2)  # (B, H, F, F)
        write = b * k.unsqueeze(-1) * v[:, :, t].to(ct).unsqueeze(-2)  # (B, H, F, D)
        S = g * torch.matmul(erase, S) + write
        outs.append(torch.einsum("bhfd,bhf->bhd", S, q).to(v.dtype))
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(B, H, 0, v.size(-1))
    return (out, S) if return_state else out
