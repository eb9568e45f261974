"""Gated causal linear attention: the state forgets by a gate g_i in (0, 1] before each token adds.

Per head, with log-gates ``log_g`` = log g (<= 0) given per token, either one scalar per head
(B, H, T) (a decay, Mamba-2 / RetNet style) or one per feature (B, H, T, F) (GLA):

    S_i = diag(g_i) S_{i-1} + phi_k_i v_i^T,    z_i = diag(g_i) z_{i-1} + phi_k_i
    out_i = (phi_q_i . S_i) / max(phi_q_i . z_i, eps)    (``normalize``; else phi_q_i . S_i)

The sum normaliser z decays with the same gate, so out_i is still a weighted mean of the values.
``log_g = None`` is g = 1 (the additive state: what --t2r-norm rms with the additive state runs).

Padding: the caller sets log_g = 0 (g = 1) AND zero features at a padded position, which then
leaves (S, z) exactly as if the position were absent (left-padded beams, padding mid-batch).

The chunked form is exact: within a chunk of C positions, with c_i = sum_{j<=i in chunk} log g_j
(cumulative log-gates, per feature when the gate is), query i sees key j <= i through
exp(c_i - c_j) and the state left by earlier chunks through exp(c_i); the state carried to the
next chunk is exp(c_C) S + sum_j exp(c_C - c_j) phi_k_j v_j^T. Every exponent is a difference
c_i - c_j with j <= i, hence <= 0: no overflow whatever the gates (the log-space form; fla's
naive GLA divides by exp(c_j) instead, which overflows for small gates). Work O(T C F D), memory
linear in T. Per head, plain autograd differentiates the chunks, and the state [S | z] crosses
from chunk to chunk by ``scan.scan_states`` (a hand-written backward: indexing chunk i in a
loop back-propagated a full-size zero tensor per chunk). Per-feature gates run
``feature.causal_gated_feature`` (the same scan across chunks, halving within them).
Half-precision inputs: every sum and the state in fp32 (``compute_dtype``).
"""
from typing import Optional

import torch
import torch.nn.functional as nnf
from torch import Tensor

from ..common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, State, autocast_off, compute_dtype, empty_state, refuse_inputs
from .feature import causal_gated_feature
from .scan import scan_states


@autocast_off
def causal_gated(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor],
    *,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    initial_state: Optional[State] = None,
    return_state: bool = False,
    normalize: bool = True,
):
    """Exact gated causal linear attention in chunks. phi_q/phi_k (B, H, T, F), v (B, H, T, D),
    log_g (B, H, T) or (B, H, T, F) or None -> out (B, H, T, D) in v's dtype; with
    ``return_state`` (out, (S (B, H, F, D), z (B, H, F))). ``initial_state``: the (S, z) of
    the tokens before these (as ``gated_step`` keeps it)."""
    out_dtype = v.dtype
    ct = compute_dtype(out_dtype)
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    q, k, vv = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    g = q.new_zeros(B, H, T, 1) if log_g is None else log_g.to(ct)
    g = g if g.dim() == 4 else g.unsqueeze(-1)  # (B, H, T, G), G = 1 or F
    if g.size(-1) != 1:
        out, state = causal_gated_feature(q, k, vv, g, eps, chunk_size, initial_state, normalize)
        return (out.to(out_dtype), state) if return_state else out.to(out_dtype)
    C = min(chunk_size, T)
    pad = (-T) % C
    q, k, vv, g = (nnf.pad(x, (0, 0, 0, pad)) for x in (q, k, vv, g))  # zeros after T: (B, H, T + pad, X)
    n = (T + pad) // C
    q, k, g = (x.reshape(B, H, n, C, -1) for x in (q, k, g))
    vv = vv.reshape(B, H, n, C, D)
    c = g.cumsum(-2)  # (B, H, n, C, G): inclusive cumulative log-gate within each chunk
    visible = torch.ones(C, C, dtype=torch.bool, device=q.device).tril_()
    diff = (c.unsqueeze(-2) - c.unsqueeze(-3)).masked_fill(~visible[:, :, None], float("-inf"))
    intra = torch.matmul(q, k.transpose(-1, -2)) * diff.squeeze(-1).exp()  # (.., C, C): q_i . k_j exp(c_i - c_j)
    q_in = q * c.exp()  # what query i reads of the state the earlier chunks left
    k_out = k * (c[..., -1:, :] - c).exp()  # key j as it stands at the chunk's end
    kv = torch.matmul(k_out.transpose(-1, -2), vv)  # (B, H, n, F, D)
    ksum = k_out.sum(-2)  # (B, H, n, F)
    carry = c[..., -1, :].exp()  # (B, H, n, 1): the whole chunk's gate
    # the states entering each chunk ([S | z], one scan with a hand-written backward: n = T / C steps)
    Sz_prev, (S, z) = scan_states(carry, torch.cat([kv, ksum.unsqueeze(-1)], -1), initial_state)
    S_prev, z_prev = Sz_prev[..., :D], Sz_prev[..., D]
    num = torch.matmul(intra, vv) + torch.matmul(q_in, S_prev)
    if normalize:
        den = intra.sum(-1) + torch.matmul(q_in, z_prev.unsqueeze(-1)).squeeze(-1)
        num = num / den.clamp(min=eps).unsqueeze(-1)
    out = num.reshape(B, H, n * C, D)[:, :, :T].to(out_dtype)
    return (out, (S, z)) if return_state else out


@autocast_off
def gated_step(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor] = None, beta: Optional[Tensor] = None, *,
    state: Optional[State] = None, eps: float = DEFAULT_EPS, inplace: bool = False, normalize: bool = True,
):
    """One token (the shared signature, ``common.Step``): phi_q/phi_k (B, H, 1, F), v (B, H, 1, D),
    log_g (B, H, 1) or (B, H, 1, F) or None (g = 1), no beta (refused), state (S (B, H, F, D),
    z (B, H, F)) or None (empty). Returns out (B, H, 1, D) in v's dtype and the new state (new
    tensors; with ``inplace`` the given pair itself, updated)."""
    refuse_inputs("ops.gated_step (the gated state)", beta=beta)
    S, z = empty_state(phi_k, v) if state is None else state
    ct = S.dtype
    q, k, vv = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    a = None
    if log_g is not None:
        a = log_g.to(ct).exp()
        a = a.squeeze(-2) if a.dim() == 4 else a  # (B, H, F) or (B, H, 1)
    if inplace:
        if a is not None:
            S.mul_(a.unsqueeze(-1))
            z.mul_(a)
        S.addcmul_(k.transpose(-1, -2), vv)
        z.add_(k.squeeze(-2))
    else:
        if a is not None:
            S, z = a.unsqueeze(-1) * S, a * z
        S = S + k.transpose(-1, -2) * vv  # (B,H,F,1)*(B,H,1,D): outer product
        z = z + k.squeeze(-2)
    num = torch.matmul(q, S)
    if normalize:
        num = num / torch.matmul(q, z.unsqueeze(-1)).clamp(min=eps)
    return num.to(v.dtype), (S, z)
