"""The chunked exact form of the (gated) delta rule for training: chunks of C positions, the
state carried from chunk to chunk, memory linear in T, plain torch ops under autograd (no
hand-written backward). The rule and its conventions are in ``step.py``.

The algebra (the WY / UT representation, as in DeltaNet's chunked form). Within a chunk, let S0
be the state before it, c_t = sum_{s <= t} log g_s (within the chunk), G_t = exp(c_t) and
Gam[t, j] = exp(c_t - c_j) for j <= t (0 above the diagonal). Writing each update as
S_t = g_t S_{t-1} + k_t w_t^T, the delta rule's corrected value is

    w_t = beta_t (v_t - g_t S_{t-1}^T k_t)
        = beta_t (v_t - G_t S0^T k_t - sum_{j < t} Gam[t, j] (k_t . k_j) w_j),

a unit lower-triangular system: (I + A) W = diag(beta) V - diag(beta G) K S0 with
A[t, j] = beta_t Gam[t, j] (k_t . k_j) for j < t. Independent of S0, for every chunk at once:
the inverse of I + A by one triangular solve (against the identity: on CPU two (C, C) products
after a C-column solve are faster than a (D + F)-column solve), U = (I + A)^-1 diag(beta) V and
Wk = (I + A)^-1 diag(beta G) K, so that W = U - Wk S0; then

    out_t = G_t q_t^T S0 + sum_{j <= t} Gam[t, j] (q_t . k_j) w_j
    S_C   = G_C S0 + sum_j Gam[C, j] k_j w_j^T.

Everything but the three (C, F) x (F, D) products per chunk that involve S0 is computed for all
chunks at once; only those run chunk after chunk. Decays are only ever exponentials of
differences c_t - c_j <= 0 (never a division by a cumulative product, which underflows), and
the solve, the state and the sums are in fp32 for half-precision inputs.
"""
from typing import Optional

import torch
import torch.nn.functional as nnf
from torch import Tensor

from ..common import autocast_off, compute_dtype
from .step import DEFAULT_DELTA_CHUNK_SIZE, DEFAULT_NORM_EPS, check_delta_inputs, empty_delta_state, l2_normalize


@autocast_off
def delta_chunked(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor],
    beta: Tensor,
    *,
    eps: float = DEFAULT_NORM_EPS,
    chunk_size: int = DEFAULT_DELTA_CHUNK_SIZE,
    initial_state: Optional[Tensor] = None,
    return_state: bool = False,
):
    """The (gated) delta rule over a sequence, exactly, in chunks. phi_q/phi_k (B, H, T, F),
    v (B, H, T, D), log_g (B, H, T) the log forget gate (<= 0) or None (g = 1), beta (B, H, T) in
    (0, 1) -> out
    (B, H, T, D) in v's dtype, unnormalised; with ``return_state`` (out, state (B, H, F, D)).
    ``initial_state``: the state of the tokens before these (as ``delta_step`` keeps it)."""
    check_delta_inputs(phi_q, phi_k, v, log_g, beta)
    if chunk_size < 1:
        raise ValueError(f"delta rule: chunk_size must be >= 1, got {chunk_size}")
    B, H, T, F = phi_k.shape
    D = v.size(-1)
    ct = compute_dtype(v.dtype)
    S = empty_delta_state(phi_k, v) if initial_state is None else initial_state.to(ct)
    if T == 0:
        out = v.new_zeros(B, H, 0, D)
        return (out, S) if return_state else out
    C = min(chunk_size, T)
    qg, qk, u, wk, kd, g_end = _chunk_tensors(phi_q, phi_k, v, log_g, beta, eps, C, ct)
    # the only sequential part: carry the state across chunks (two small products per chunk);
    # unbind, not indexing: one backward node for all chunks instead of a full-size zero tensor each
    starts, ws = [], []
    g_ends = g_end.unbind(2) if log_g is not None else [None] * u.size(2)
    for u_i, wk_i, kd_i, g_i in zip(u.unbind(2), wk.unbind(2), kd.unbind(2), g_ends):
        w = u_i - torch.matmul(wk_i, S)  # (B, H, C, D): this chunk's corrected values
        starts.append(S)
        ws.append(w)
        if g_i is not None:
            S = g_i[..., None, None] * S
        S = S + torch.matmul(kd_i.transpose(-1, -2), w)
    # every chunk's output at once, from the state before it and its corrected values
    out = torch.matmul(qg, torch.stack(starts, 2)) + torch.matmul(qk, torch.stack(ws, 2))
    out = out.reshape(B, H, -1, D)[:, :, :T].to(v.dtype)
    return (out, S) if return_state else out


def _chunk_tensors(phi_q, phi_k, v, log_g, beta, eps, C, ct):
    """Everything that does not depend on the carried state, for all chunks at once, laid out
    (B, H, n, C, *): qg = G q (C, F), qk = Gam * (q k^T) (C, C), u = U (C, D), wk = Wk (C, F),
    kd = Gam[C, :] k (C, F); and g_end = G_C (B, H, n) (None without a gate)."""
    B, H, T, F = phi_k.shape
    pad = (-T) % C
    n = (T + pad) // C
    # padded tail: zero features (no erase, no write), beta 0 and log-gate 0 (no decay)
    q = nnf.pad(l2_normalize(phi_q.to(ct), eps), (0, 0, 0, pad)).reshape(B, H, n, C, F)
    k = nnf.pad(l2_normalize(phi_k.to(ct), eps), (0, 0, 0, pad)).reshape(B, H, n, C, F)
    vc = nnf.pad(v.to(ct), (0, 0, 0, pad)).reshape(B, H, n, C, -1)
    b = nnf.pad(beta.to(ct), (0, pad)).reshape(B, H, n, C, 1)
    incl = torch.ones(C, C, dtype=torch.bool, device=v.device).tril_()
    G = gam = None
    if log_g is not None:
        c = nnf.pad(log_g.to(ct), (0, pad)).reshape(B, H, n, C).cumsum(-1)
        G = torch.exp(c).unsqueeze(-1)  # (B, H, n, C, 1)
        gam = torch.exp((c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(~incl, float("-inf")))
    kk = torch.matmul(k, k.transpose(-1, -2))
    # I + A, A strictly lower
    eye = torch.eye(C, dtype=ct, device=v.device)
    a = (b * (kk if gam is None else gam * kk)).masked_fill(~incl.tril(-1), 0.0) + eye
    inv = torch.linalg.solve_triangular(a, eye.expand_as(a), upper=False, unitriangular=True)
    u = torch.matmul(inv * b.transpose(-1, -2), vc)
    wk = torch.matmul(inv * (b if G is None else b * G).transpose(-1, -2), k)
    qk = torch.matmul(q, k.transpose(-1, -2))
    qk = qk.masked_fill(~incl, 0.0) if G is None else gam * qk
    if G is None:
        return q, qk, u, wk, k, None
    kd = gam[..., -1, :].unsqueeze(-1) * k  # Gam[C, j] = exp(c_C - c_j)
    return G * q, qk, u, wk, kd, G[..., -1, 0]
