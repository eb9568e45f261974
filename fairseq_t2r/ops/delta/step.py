"""The delta rule (DeltaNet) and the gated delta rule (Gated DeltaNet): what they share, and the
one-token recurrent step. The chunked training form is in ``chunked.py``, the token-by-token
reference in ``naive.py``.

Per head, with k_i, q_i the L2-normalised features phi(k_i), phi(q_i), beta_i in (0, 1) the
write strength and g_i in (0, 1] the forget gate, given as its log ``log_g`` = log g_i <= 0 as in
every gated form (None: g_i = 1, the plain delta rule):

    S_i = g_i (I - beta_i k_i k_i^T) S_{i-1} + beta_i k_i v_i^T,      out_i = S_i^T q_i

i.e. the state first forgets (g_i), then replaces what it returned for k_i by a beta_i-mix of
that and v_i. The state is S alone, (B, H, F, D), always in ``compute_dtype`` (fp32 for half
inputs); there is no z and no denominator: the output is unnormalised, and the module normalises
it (per-head RMS norm, ``--t2r-norm rms``).

Why normalise the features inside the op: (I - beta k k^T) has eigenvalue 1 - beta ||k||^2 along
k and 1 elsewhere, so the update is a contraction only while beta ||k||^2 <= 2; with ||k|| <= 1
and beta in (0, 1) the state stays bounded for any length. T2R's features are unbounded
(relu(Wx + b)), so every form divides phi_k and phi_q by sqrt(||.||^2 + eps^2) (``l2_normalize``),
the standard choice (DeltaNet, fla's ``use_qk_l2norm``); eps keeps it smooth at 0, where it
returns 0. Normalising q only rescales out_i, which the RMS norm removes anyway, but keeps the
outputs bounded by ||S|| in half precision.

Padding: a padded position must leave the state as if it were absent. The caller zeros its
features (``mask_padded_keys``, as for every form: k = 0 makes the erase and the write vanish,
whatever beta is) and sets its log-gate to 0 (``mask_padded_log_gates``: otherwise the state would
still decay there). beta at a padded position is then irrelevant.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..common import autocast_off, compute_dtype

DEFAULT_NORM_EPS = 1e-6  # floor of the feature norm: sqrt(||phi||^2 + eps^2)
# chunks of the training form: 32 measured fastest on CPU (benchmarks/delta_speed.py: 16, 32, 64)
DEFAULT_DELTA_CHUNK_SIZE = 32


def l2_normalize(x: Tensor, eps: float = DEFAULT_NORM_EPS) -> Tensor:
    """x (..., F) divided by sqrt(||x||^2 + eps^2) along the last dim: norm < 1, smooth, 0 at 0."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps * eps)


def check_delta_inputs(phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor], beta: Optional[Tensor]) -> None:
    """One clear ValueError when beta is missing or the per-token tensors do not line up (B, H, T, *)."""
    if beta is None:
        raise ValueError("the delta rule needs beta (B, H, T), the write strength in (0, 1)")
    if phi_q.shape != phi_k.shape or phi_k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"delta rule: phi_q {tuple(phi_q.shape)}, phi_k {tuple(phi_k.shape)} must be (B, H, T, F) "
            f"and v {tuple(v.shape)} (B, H, T, D) with the same B, H, T"
        )
    for name, t in (("log_g", log_g), ("beta", beta)):
        if t is not None and t.shape != phi_k.shape[:-1]:
            raise ValueError(
                f"delta rule: {name} has shape {tuple(t.shape)}, expected {tuple(phi_k.shape[:-1])} "
                "(one scalar per batch, head and position)"
            )


def empty_delta_state(phi_k: Tensor, v: Tensor) -> Tensor:
    """The state before the first token: zeros (B, H, F, D) in the compute dtype, shaped from
    phi_k (B, H, *, F) and v (B, H, *, D)."""
    B, H, _, F = phi_k.shape
    return v.new_zeros(B, H, F, v.size(-1), dtype=compute_dtype(v.dtype))


@autocast_off
def delta_step(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor] = None,
    beta: Optional[Tensor] = None,
    *,
    state: Optional[Tensor] = None,
    eps: float = DEFAULT_NORM_EPS,
    inplace: bool = False,
) -> Tuple[Tensor, Tensor]:
    """One token of the (gated) delta rule (the shared signature, ``common.Step``): phi_q/phi_k
    (B, H, 1, F), v (B, H, 1, D), log_g (B, H, 1) or None (g = 1), beta (B, H, 1) (required),
    state (B, H, F, D) or None (empty). Returns out (B, H, 1, D) in v's dtype, unnormalised, and
    the new state. By default the state is a new tensor (the old one is unchanged: safe under
    autograd and for beam reordering); ``inplace=True`` updates ``state`` itself, for decoding
    under no_grad (no allocation of a second (F, D) state per step)."""
    check_delta_inputs(phi_q, phi_k, v, log_g, beta)
    if state is None:
        state = empty_delta_state(phi_k, v)
    ct = state.dtype
    q, k = l2_normalize(phi_q.to(ct), eps), l2_normalize(phi_k.to(ct), eps)
    b = beta.to(ct).unsqueeze(-1)  # (B, H, 1, 1)
    S = state
    if log_g is not None:
        g = log_g.to(ct).exp().unsqueeze(-1)  # (B, H, 1, 1)
        S = S.mul_(g) if inplace else S * g
    # the write: beta * (v - what the forgotten state returns for k), stored along k
    delta = b * (v.to(ct) - torch.matmul(k, S))  # (B, H, 1, D)
    # the outer product k delta^T added by one batched product (no (F, D) temporary)
    B, H, F, D = S.shape
    kt, d = k.transpose(-1, -2).reshape(B * H, F, 1), delta.reshape(B * H, 1, D)
    if not inplace:
        S = torch.baddbmm(S.reshape(B * H, F, D), kt, d).view(B, H, F, D)
    elif S.is_contiguous():
        S.view(B * H, F, D).baddbmm_(kt, d)
    else:
        S.add_(torch.matmul(kt, d).view(B, H, F, D))
    return torch.matmul(q, S).to(v.dtype), S
