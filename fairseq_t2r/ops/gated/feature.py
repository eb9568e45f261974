"""Per-feature gates (GLA): ``causal_gated``'s form when log_g is (B, H, T, F). Exact, log space.

Chunks of C positions (``chunk_size``, at most ``FEATURE_GATE_CHUNK_SIZE`` and T, rounded up
to a power of two), c_i the cumulative log-gate within i's chunk (per feature). Across chunks,
as for per-head gates: query i reads the state entering its chunk through q_i * exp(c_i), and
the chunk adds its keys as they stand at its end, k_j * exp(c_C - c_j); the states entering the
chunks come from ``scan.scan_states`` (a hand-written backward; T / C Python steps).
Within a chunk, query i sees key j <= i through sum_f q_if k_jf exp(c_if - c_jf), which no single matmul gives. Halving: a block
of b positions splits at m, the last position of its first half; for i in the second half and
j in the first, exp(c_i - c_j) = exp(c_i - c_m) * exp(c_m - c_j), both exponents <= 0, so that
pair of halves is one matmul of rescaled queries and keys; then each half is split in turn,
down to single positions (j = i: weight q_i . k_i). log2(C) levels of elementwise work on
(T, F) tensors instead of a (C, C, F) tensor of decay factors per chunk (the earlier form's,
at C = 16: ~0.5 s of its fwd + bwd at T = 4096; this is GLA/fla's secondary chunking taken down
to single positions).

Every exponent is <= 0, so nothing overflows whatever the gates; a factor that underflows to 0
stands for a true weight smaller still. The normaliser z rides along as one more column of v (a
column of ones): one matmul gives numerator and denominator, one scan carries (S, z).
"""
import math
from typing import Optional

import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..common import State
from .scan import scan_states

FEATURE_GATE_CHUNK_SIZE = 32  # at most: the layer's fwd + bwd ~10% faster than with 64 (T=4096, CPU)


def causal_gated_feature(
    q: Tensor, k: Tensor, v: Tensor, log_g: Tensor, eps: float, chunk_size: int,
    initial_state: Optional[State], normalize: bool,
):
    """q/k (B, H, T, F), v (B, H, T, D), log_g (B, H, T, F), all in the compute dtype (the
    initial state is converted to it) ->
    (out (B, H, T, D), final (S (B, H, F, D), z (B, H, F)))."""
    B, H, T, F = q.shape
    D = v.size(-1)
    C = 2 ** math.ceil(math.log2(max(1, min(chunk_size, FEATURE_GATE_CHUNK_SIZE, T))))
    pad = (-T) % C
    n = (T + pad) // C
    v1 = torch.cat([v, v.new_ones(B, H, T, 1)], -1)  # (B, H, T, D + 1): the last column gives z
    q, k, v1, g = (nnf.pad(x, (0, 0, 0, pad)).reshape(B, H, n, C, -1) for x in (q, k, v1, log_g))
    c = g.cumsum(-2)  # (B, H, n, C, F): inclusive, within each chunk
    k_end = k * (c[..., -1:, :] - c).exp()  # key j as it stands at its chunk's end
    x = torch.matmul(k_end.transpose(-1, -2), v1)  # (B, H, n, F, D + 1): each chunk's own state
    entering, final = scan_states(c[..., -1, :].exp(), x, initial_state)  # entering: (B, H, n, F, D + 1)
    num = torch.matmul(q * c.exp(), entering) + within_chunks(q, k, v1, c)  # (B, H, n, C, D + 1)
    num = num.reshape(B, H, n * C, D + 1)[:, :, :T]
    out = num[..., :D]
    if normalize:
        out = out / num[..., D:].clamp(min=eps)
    return out, final


def within_chunks(q: Tensor, k: Tensor, v: Tensor, c: Tensor) -> Tensor:
    """sum over j <= i in i's chunk of (sum_f q_if k_jf exp(c_if - c_jf)) v_j, by halving:
    q, k, c (..., C, F), v (..., C, E), C a power of two -> (..., C, E)."""
    lead, C, E = q.shape[:-2], q.size(-2), v.size(-1)
    flat = (x.reshape(-1, C, x.size(-1)) for x in (q, k, v, c))
    return WithinChunks.apply(*flat).reshape(lead + (C, E))


def _halves(x: Tensor, b: int):
    """(N, C, X) -> its blocks of b positions as (first halves, second halves), each (N, C / b, b / 2, X) views."""
    return x.view(x.size(0), x.size(1) // b, 2, b // 2, x.size(-1)).unbind(2)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """a @ b; elementwise for the smallest halves (h <= 2), where a batched matmul of thousands
    of tiny matrices costs several times more."""
    if min(a.size(-2), b.size(-1)) <= 2:
        return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)
    return torch.matmul(a, b)


def _level(q, k, c, b):
    """One halving level: the second halves' rescaled queries, the first halves' rescaled keys
    (both exponents <= 0: m is the first half's last position) and their weights w (.., h, h)."""
    (_, q1), (k0, _), (c0, c1) = _halves(q, b), _halves(k, b), _halves(c, b)
    m = c0[..., -1:, :]
    eq, ek = (c1 - m).exp(), (m - c0).exp()
    q1s, k0s = q1 * eq, k0 * ek
    return eq, ek, q1s, k0s, _mm(q1s, k0s.transpose(-1, -2))


class WithinChunks(torch.autograd.Function):
    """``within_chunks`` on (N, C, X) tensors, its backward written out: plain autograd spent
    most of its time on the halves' slices and on re-assembling them (zero-filled copies).
    Saves only the inputs; the backward recomputes each level's factors (elementwise, cheap)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, c: Tensor) -> Tensor:
        out = (q * k).sum(-1, keepdim=True) * v  # j = i
        b = q.size(1)
        while b > 1:
            w = _level(q, k, c, b)[-1]
            _halves(out, b)[1].add_(_mm(w, _halves(v, b)[0]))
            b //= 2
        ctx.save_for_backward(q, k, v, c)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout: Tensor):
        q, k, v, c = ctx.saved_tensors
        dout = dout.contiguous()
        d_qk = (dout * v).sum(-1, keepdim=True)  # the diagonal j = i
        dq, dk, dv, dc = d_qk * k, d_qk * q, (q * k).sum(-1, keepdim=True) * dout, torch.zeros_like(c)
        b = q.size(1)
        while b > 1:
            eq, ek, q1s, k0s, w = _level(q, k, c, b)
            do1, v0 = _halves(dout, b)[1], _halves(v, b)[0]
            dw = _mm(do1, v0.transpose(-1, -2))
            _halves(dv, b)[0].add_(_mm(w.transpose(-1, -2), do1))
            dq1s, dk0s = _mm(dw, k0s), _mm(dw.transpose(-1, -2), q1s)
            _halves(dq, b)[1].add_(dq1s * eq)
            _halves(dk, b)[0].add_(dk0s * ek)
            gq, gk = dq1s * q1s, dk0s * k0s  # d/dc1 of q1s is q1s; d/dc0 of k0s is -k0s
            dc0, dc1 = _halves(dc, b)
            dc1.add_(gq)
            dc0.sub_(gk)
            dc0[..., -1, :].add_(gk.sum(-2) - gq.sum(-2))  # through m, the first half's last position
            b //= 2
        return dq, dk, dv, dc
