"""The state forms: a query against a running or fixed key summary, (S, z) = (sum phi_k v^T,
sum phi_k). Constant time and memory per token: incremental decoding runs ``recurrent_step``,
cross-attention reduces its keys once with ``summarize_keys`` and queries them with
``attend_state``."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..common import DEFAULT_EPS, State, autocast_off, compute_dtype, empty_state, refuse_inputs


@autocast_off
def recurrent_step(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor] = None, beta: Optional[Tensor] = None, *,
    state: Optional[State] = None, eps: float = DEFAULT_EPS, inplace: bool = False,
) -> Tuple[Tensor, State]:
    """One token (the shared signature, ``common.Step``): phi_q/phi_k (B, H, 1, F), v (B, H, 1, D),
    no gate and no beta (refused), state (S (B, H, F, D), z (B, H, F)) or None (empty). Returns
    out (B, H, 1, D) in v's dtype and the new state: a new tensor pair (the old one unchanged),
    or with ``inplace`` the given pair itself, updated."""
    refuse_inputs("ops.recurrent_step (the additive state)", log_g=log_g, beta=beta)
    S, z = empty_state(phi_k, v) if state is None else state
    ct = S.dtype
    q, k, vv = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    if inplace:
        S.addcmul_(k.transpose(-1, -2), vv)
        z.add_(k.squeeze(-2))
    else:
        S = S + k.transpose(-1, -2) * vv  # (B,H,F,1)*(B,H,1,D): outer product
        z = z + k.squeeze(-2)
    return attend_state(q, (S, z), eps, out_dtype=v.dtype), (S, z)


@autocast_off
def summarize_keys(phi_k: Tensor, v: Tensor) -> State:
    """(S (B, H, F, D), z (B, H, F)) over all keys phi_k (B, H, S, F), v (B, H, S, D): what a
    query sees in non-causal (cross) attention."""
    ct = compute_dtype(v.dtype)
    k, vv = phi_k.to(ct), v.to(ct)
    return torch.matmul(k.transpose(-1, -2), vv), k.sum(-2)


@autocast_off
def attend_state(
    phi_q: Tensor, state: State, eps: float = DEFAULT_EPS, out_dtype: Optional[torch.dtype] = None
) -> Tensor:
    """Queries phi_q (B, H, T, F) against a fixed key summary: (phi_q . S) / max(phi_q . z, eps),
    (B, H, T, D) in ``out_dtype`` (default phi_q's)."""
    S, z = state
    q = phi_q.to(S.dtype)
    num = torch.matmul(q, S)
    den = torch.matmul(q, z.unsqueeze(-1))
    return (num / den.clamp(min=eps)).to(out_dtype or phi_q.dtype)


def split_state(Sz: Tensor) -> State:
    """[S | z] (..., F, D + 1), the one tensor incremental decoding keeps -> (S, z), views."""
    return Sz[..., :-1], Sz[..., -1]


def join_state(S: Tensor, z: Tensor) -> Tensor:
    """(S (..., F, D), z (..., F)) -> [S | z] (..., F, D + 1)."""
    return torch.cat([S, z.unsqueeze(-1)], -1)
