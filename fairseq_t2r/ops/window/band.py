"""The window's banded softmax sums as one autograd Function with a written-out backward.

Forward as ``chunked.window_parts`` describes (queries in blocks of C, each against the C + W - 1
key slots its band can reach, a strided view of one padded copy of k and v). Autograd through
those steps spent most of the window's backward on bookkeeping: the scatter of the strided key
and value views back onto positions (``unfold_backward``), the masked scores' backward and
copies. Here the backward is the softmax sums' own algebra, with m a constant (as it is
everywhere: the callers detach it):

    e = exp(s - m) (0 outside the band or at padded keys), den = sum_r e, num = e V
    de = g_num V^T + g_den,  ds = de * e,  dq = ds K,  dK = ds^T q,  dV = e^T g_num

and the per-block key and value gradients are added back onto positions block piece by block
piece (block b's slot r is position bC - W + 1 + r). The exponentials e (O(N (C + W)), linear in
N) are kept for the backward rather than recomputed. Differentiable once.
"""
from typing import Tuple

import torch
from torch import Tensor


def blocks(x: Tensor, C: int, nb: int) -> Tensor:
    """x (B, H, T, ...) zero-padded to nb * C positions and cut into (B, H, nb, C, ...)."""
    T = x.size(2)
    x = torch.cat([x, x.new_zeros(*x.shape[:2], nb * C - T, *x.shape[3:])], 2) if nb * C > T else x
    return x.reshape(*x.shape[:2], nb, C, *x.shape[3:])


def key_blocks(x: Tensor, window: int, C: int, nb: int, fill=0.0) -> Tensor:
    """x (B, H, T, D) -> (B, H, nb, C + W - 1, D): block b holds positions [bC - W + 1, bC + C), those
    outside [0, T) set to ``fill``. A strided view of one padded copy (memory O(N + W), not O(N W))."""
    T = x.size(2)
    front = x.new_full((*x.shape[:2], window - 1, *x.shape[3:]), fill)
    back = x.new_full((*x.shape[:2], nb * C - T, *x.shape[3:]), fill)
    xp = torch.cat([front, x, back], 2)  # (B, H, W - 1 + nb C, ...)
    return xp.unfold(2, C + window - 1, C).movedim(-1, 3)  # (B, H, nb, C + W - 1, ...)


def fold_key_blocks(g: Tensor, window: int, C: int, T: int) -> Tensor:
    """The adjoint of ``key_blocks``: per-slot gradients (B, H, nb, C + W - 1, D) summed onto the
    positions (B, H, T, D) they were read from (slots outside [0, T) dropped)."""
    B, H, nb, L, D = g.shape
    pieces = -(-L // C)
    out = g.new_zeros(B, H, nb + pieces, C, D)  # padded positions [0, (nb + pieces) C) = [-W + 1, ...)
    for j in range(pieces):  # slots [jC, (j+1)C) of block b sit in padded block b + j
        n = min(C, L - j * C)
        out[:, :, j : j + nb, :n] += g[:, :, :, j * C : j * C + n]
    return out.view(B, H, -1, D)[:, :, window - 1 : window - 1 + T]


class WindowSums(torch.autograd.Function):
    """(q, k, v (B, H, T, D), band mask (B or 1, 1, nb, C, C + W - 1) True = hidden) -> m, sum e,
    sum e v per query in blocks (B, H, nb, C[, D])."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, hidden: Tensor, window: int, C: int):
        T = q.size(2)
        nb = -(-T // C)
        qb, kb, vb = blocks(q, C, nb), key_blocks(k, window, C, nb), key_blocks(v, window, C, nb)
        s = torch.matmul(qb, kb.transpose(-1, -2)).masked_fill_(hidden, float("-inf"))
        m = s.amax(-1)
        e = s.sub_(m.nan_to_num(nan=0.0, neginf=0.0)[..., None]).exp_()  # exp(-inf) = 0 off the band
        num = torch.matmul(e, vb)
        ctx.save_for_backward(q, k, v, e)
        ctx.window, ctx.C = window, C
        ctx.mark_non_differentiable(m)
        return m, e.sum(-1), num

    @staticmethod
    def backward(ctx, _gm, g_den, g_num) -> Tuple:
        q, k, v, e = ctx.saved_tensors
        W, C = ctx.window, ctx.C
        B, H, T, D = q.shape
        nb = e.size(2)
        if g_num is None:
            g_num = e.new_zeros(B, H, nb, C, v.size(-1))
        de = torch.matmul(g_num, key_blocks(v, W, C, nb).transpose(-1, -2))  # (B, H, nb, C, C + W - 1)
        if g_den is not None:
            de += g_den[..., None]
        ds = de.mul_(e)
        dq = torch.matmul(ds, key_blocks(k, W, C, nb)).reshape(B, H, nb * C, D)[:, :, :T]
        dk = fold_key_blocks(torch.matmul(ds.transpose(-1, -2), blocks(q, C, nb)), W, C, T)
        dv = fold_key_blocks(torch.matmul(e.transpose(-1, -2), g_num), W, C, T)
        return dq, dk, dv, None, None, None
