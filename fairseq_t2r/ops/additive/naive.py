"""The naive references the fast forms are tested against: slow, obviously correct, and
independent of every other form (they share only ``common.py``), so that a test comparing a fast
form with them checks the fast form and nothing else.

``causal_reference`` runs the recurrence token by token with the same operations, in the same
order, as ``recurrent_step``: in low precision it also measures the recurrent form's rounding
(benchmarks/gpu_precision.py).
"""
import torch
from torch import Tensor

from ..common import DEFAULT_EPS, autocast_off, compute_dtype


@autocast_off
def causal_reference(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Causal linear attention token by token. phi_q (B, H, T, F), phi_k (B, H, T, F),
    v (B, H, T, D) -> (B, H, T, D) in v's dtype; sums in ``compute_dtype(v.dtype)``.

    out_i = (phi_q_i . S_i) / max(phi_q_i . z_i, eps), S_i = sum_{j <= i} phi_k_j v_j^T,
    z_i = sum_{j <= i} phi_k_j."""
    B, H, T, F = phi_k.shape
    ct = compute_dtype(v.dtype)
    S = v.new_zeros(B, H, F, v.size(-1), dtype=ct)
    z = v.new_zeros(B, H, F, dtype=ct)
    outs = []
    for t in range(T):
        q, k, vv = (x[:, :, t : t + 1].to(ct) for x in (phi_q, phi_k, v))
        S = S + k.transpose(-1, -2) * vv  # (B,H,F,1)*(B,H,1,D): outer product
        z = z + k.squeeze(-2)
        num = torch.matmul(q, S)
        den = torch.matmul(q, z.unsqueeze(-1))
        outs.append((num / den.clamp(min=eps)).to(v.dtype))
    return torch.cat(outs, dim=-2)


@autocast_off
def noncausal_reference(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Every query sees every key, one query at a time from the explicit weights.
    phi_q (B, H, T, F), phi_k (B, H, S, F), v (B, H, S, D) -> (B, H, T, D) in v's dtype."""
    ct = compute_dtype(v.dtype)
    k, vv = phi_k.to(ct), v.to(ct)
    outs = []
    for t in range(phi_q.size(-2)):
        w = (phi_q[:, :, t : t + 1].to(ct) * k).sum(-1)  # (B, H, S): phi_q_t . phi_k_j
        out = (w.unsqueeze(-1) * vv).sum(-2) / w.sum(-1, keepdim=True).clamp(min=eps)
        outs.append(out.unsqueeze(-2).to(v.dtype))
    return torch.cat(outs, dim=-2)
