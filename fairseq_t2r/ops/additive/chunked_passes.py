"""The chunked form written out: forward and backward passes without autograd, shared by
``chunked.ChunkedLinearAttention`` and ``fused_relu.ProjectedReluLinearAttention``.

Per (batch, head) and chunk c of C positions, with V' = [V, 1] (a ones column, so that the
denominator comes out of the same matmuls as the numerator):
    A_c   = tril(Q_c K_c^T)                        (C, C)
    P_c   = P0 + sum_{c' < c} K_c'^T V'_c'           (F, D + 1)   exclusive prefix of chunk states
    N'_c  = A_c V'_c + Q_c P_c = [num | den]
    out_c = num / max(den, eps)
Backward, from dout: dN' = [dout / max(den, eps) | -(dout . num) / max(den, eps)^2 * (den >= eps)],
    dA = tril(dN' V'^T),  R_c = sum_{c' > c} Q_c'^T dN'_c'   (exclusive suffix),
    dQ = dA K + dN' P^T,  dK = dA^T Q + V' R^T,  dV' = A^T dN' + K R.
On CPU, heads are processed in groups (a few MB of working set each), so the transient per-chunk
tensors never exist for all heads at once and stay in cache; on CUDA all heads form one group
(``heads_per_group``): a pass then launches the same few kernels at any length, instead of
that many per group (hundreds at 8k tokens: launch-bound), and the GPU's memory holds the
transients (the largest, tril(Q K^T), is B * H * T * C fp32 values).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..common import compute_dtype

_GROUP_ROWS = 1 << 13  # positions x heads per group on CPU (cache-sized)


def heads_per_group(G: int, Tp: int, is_cuda: bool) -> int:
    """How many of the G = B * H (batch, head) rows of Tp (padded) positions each pass takes at
    once: all of them on CUDA; on CPU as many as fit _GROUP_ROWS positions (at least one)."""
    if is_cuda:
        return max(1, G)
    return max(1, min(G, _GROUP_ROWS // max(Tp, 1)))


def _groups(G: int, Tp: int, is_cuda: bool = False):
    step = heads_per_group(G, Tp, is_cuda)
    return [(g, min(G, g + step)) for g in range(0, G, step)]


def _chunk_len(T: int, chunk_size: int) -> Tuple[int, int]:
    """(C, Tp): the chunk length and T padded to a multiple of it."""
    C = max(1, min(chunk_size, T))
    return C, T + (-T) % C


def _load(x: Tensor, g0: int, g1: int, Tp: int, ct, ones: bool = False) -> Tensor:
    """Rows g0:g1 of x (G, T, X) (any strides) as a contiguous (g, Tp, X [+1]) tensor in dtype ct,
    zero-padded to Tp positions; with ``ones`` a column of ones is appended (V' = [V, 1])."""
    g, T, X = g1 - g0, x.size(1), x.size(2)
    buf = torch.empty(g, Tp, X + ones, dtype=ct, device=x.device)
    buf[:, :T, :X].copy_(x[g0:g1])
    if Tp > T:
        buf[:, T:, :X].zero_()
    if ones:
        buf[:, :, X].fill_(1.0)
    return buf


def _flat(x: Tensor) -> Tensor:
    """(B, H, T, X) -> (B * H, T, X): a view for head-major tensors and for permuted views of
    (T, B, H, X) projections alike; a copy only for other layouts."""
    return x.reshape(x.size(0) * x.size(1), x.size(2), x.size(3))


def _empty_like_flat(x: Tensor, dtype=None) -> Tuple[Tensor, Tensor]:
    """An empty tensor shaped and laid out like x (B, H, T, X) (so that a (T, B, H, X) layout
    merges its heads back as a view), and its (B * H, T, X) view."""
    out = torch.empty_like(x, dtype=dtype)
    try:
        return out, out.view(x.size(0) * x.size(1), x.size(2), x.size(3))
    except RuntimeError:
        out = torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)
        return out, _flat(out)


def _prefix_states(kc: Tensor, vc: Tensor, g: int, n: int, S0: Optional[Tensor]):
    """kv (g, n, F, D1) per chunk and P (g, n, F, D1), the exclusive prefix (state before chunk)."""
    F, D1 = kc.size(-1), vc.size(-1)
    kv = torch.bmm(kc.transpose(1, 2), vc).view(g, n, F, D1)
    P = torch.empty_like(kv)
    P[:, 0].zero_()
    if n > 1:
        torch.cumsum(kv[:, :-1], dim=1, out=P[:, 1:])
    if S0 is not None:
        P += S0.unsqueeze(1)
    return kv, P


def chunked_forward(phi_q, phi_k, v, eps, chunk_size, initial_state=None, return_state=False, out=None):
    """phi_q/phi_k (B, H, T, F), v (B, H, T, D) -> (out (B, H, T, D), den (B, H, T) before the
    clamp, final state or None); no autograd. ``out``: a given (B, H, T, D) buffer whose (B, H)
    dims merge as a view (e.g. a permuted (T, B, H, D) tensor)."""
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    ct = compute_dtype(v.dtype)
    C, Tp = _chunk_len(T, chunk_size)
    n = Tp // C
    G = B * H
    q3, k3, v3 = _flat(phi_q), _flat(phi_k), _flat(v)
    if out is None:
        out, out3 = _empty_like_flat(v)
    else:
        out3 = out.view(G, T, D)
    den = torch.empty(B, H, T, dtype=ct, device=v.device)
    den3 = den.view(G, T)
    S0 = None
    if initial_state is not None:
        S0 = torch.cat([initial_state[0].to(ct), initial_state[1].to(ct).unsqueeze(-1)], -1).reshape(G, F, D + 1)
    finals = []
    for g0, g1 in _groups(G, Tp, v.is_cuda):
        g = g1 - g0
        qc = _load(q3, g0, g1, Tp, ct).view(g * n, C, F)
        kc = _load(k3, g0, g1, Tp, ct).view(g * n, C, F)
        vc = _load(v3, g0, g1, Tp, ct, ones=True).view(g * n, C, D + 1)
        kv, P = _prefix_states(kc, vc, g, n, None if S0 is None else S0[g0:g1])
        if return_state:
            finals.append(P[:, -1] + kv[:, -1])
        del kv
        A = torch.bmm(qc, kc.transpose(1, 2)).tril_()
        N = torch.bmm(A, vc)
        del A
        N.baddbmm_(qc, P.view(g * n, F, D + 1))
        N = N.view(g, Tp, D + 1)[:, :T]
        den3[g0:g1] = N[..., D]
        torch.div(N[..., :D], N[..., D:].clamp(min=eps), out=out3[g0:g1])
    state = None
    if return_state:
        Sz = torch.cat(finals, 0).view(B, H, F, D + 1)
        state = (Sz[..., :D], Sz[..., D])
    return out, den, state


def _d_numerator(do: Tensor, num: Tensor, raw: Tensor, eps: float, Tp: int) -> Tensor:
    """dN' (g, Tp, D + 1) from dout and num (g, T, D) and den before the clamp (g, T); zero on
    the padding positions T:Tp."""
    g, T, D = do.shape
    dmax = raw.clamp(min=eps)
    dN = torch.empty(g, Tp, D + 1, dtype=do.dtype, device=do.device)
    if Tp > T:
        dN[:, T:].zero_()
    torch.div(do, dmax.unsqueeze(-1), out=dN[:, :T, :D])
    # d/d den of num / max(den, eps): -(dout . out) / max(den, eps) where den >= eps (as clamp)
    dot = torch.linalg.vecdot(do, num)
    dN[:, :T, D] = dot.div_(dmax).div_(dmax).neg_().masked_fill_(raw < eps, 0.0)
    return dN


def chunked_backward(phi_q, phi_k, v, den, dout, eps, chunk_size, into=None, relu=False):
    """(dq, dk, dv) like phi_q, phi_k, v, from den (B, H, T) of the forward and dout (B, H, T, D).
    ``into``: three (B, H, T, X) tensors to write them to (they may be phi_q, phi_k and v
    themselves: a group's inputs are loaded before its gradients are written, and groups are
    disjoint). ``relu``: phi_q/phi_k are relu outputs and the gradients returned for them are
    those of the pre-activations (times 1[phi > 0], as torch's relu backward)."""
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    ct = den.dtype
    C, Tp = _chunk_len(T, chunk_size)
    n = Tp // C
    q3, k3, v3, do3 = _flat(phi_q), _flat(phi_k), _flat(v), _flat(dout)
    den3 = den.view(B * H, T)
    if into is None:
        (dq, dq3), (dk, dk3), (dv, dv3) = _empty_like_flat(phi_q), _empty_like_flat(phi_k), _empty_like_flat(v)
    else:
        (dq, dk, dv), (dq3, dk3, dv3) = into, (_flat(t) for t in into)
    for g0, g1 in _groups(B * H, Tp, v.is_cuda):
        g = g1 - g0
        qc = _load(q3, g0, g1, Tp, ct).view(g * n, C, F)
        kc = _load(k3, g0, g1, Tp, ct).view(g * n, C, F)
        vc = _load(v3, g0, g1, Tp, ct, ones=True).view(g * n, C, D + 1)
        _, P = _prefix_states(kc, vc, g, n, None)
        P = P.view(g * n, F, D + 1)
        A = torch.bmm(qc, kc.transpose(1, 2)).tril_()
        # the output is recomputed rather than kept from the forward (one tensor of the
        # sequence's size less held between forward and backward)
        num = torch.bmm(A, vc).baddbmm_(qc, P).view(g, Tp, D + 1)[:, :T, :D]
        dN = _d_numerator(do3[g0:g1].to(ct), num, den3[g0:g1], eps, Tp).view(g * n, C, D + 1)
        del num
        dP = torch.bmm(qc.transpose(1, 2), dN).view(g, n, F, D + 1)
        R = torch.empty_like(dP)  # exclusive suffix sums of dP over chunks
        R[:, -1].zero_()
        if n > 1:
            R[:, :-1] = dP[:, 1:].flip(1).cumsum(1).flip(1)
        del dP
        R = R.view(g * n, F, D + 1)
        dA = torch.bmm(dN, vc.transpose(1, 2)).tril_()
        gq = torch.bmm(dA, kc).baddbmm_(dN, P.transpose(1, 2))
        del P
        gk = torch.bmm(dA.transpose(1, 2), qc).baddbmm_(vc, R.transpose(1, 2))
        del dA
        gv = torch.bmm(A.transpose(1, 2), dN).baddbmm_(kc, R)
        del A
        if relu:
            gq.masked_fill_(qc <= 0, 0.0)
            gk.masked_fill_(kc <= 0, 0.0)
        dq3[g0:g1] = gq.view(g, Tp, F)[:, :T]
        dk3[g0:g1] = gk.view(g, Tp, F)[:, :T]
        dv3[g0:g1] = gv.view(g, Tp, D + 1)[:, :T, :D]
    return dq, dk, dv
