"""The window's banded softmax sums (``chunked.window_parts``) as one autograd Function with a
written-out backward, on contiguous key blocks.

Queries in blocks of C; block b's window reaches back W - 1 positions, i.e. into the P = ceil((W -
1) / C) blocks before it (P = 1 at the default C = max(W, 64)). Its keys are those P blocks and its
own, copied side by side into one contiguous (B, H, nb, (P + 1) C, D) tensor: every product below is
then a plain batched matmul (transposes included). The strided view of overlapping windows this
replaced (``unfold``) made torch copy each operand before every matmul and loop over the batch in
places, and autograd spent most of the window's backward scattering that view back onto positions
(``unfold_backward``) and through the masked scores. Slot r of block b is position (b - P) C + r;
query a of block b sees slots r in [P C + a - W + 1, P C + a], positions in [0, T), not padded.

The backward is the softmax sums' own algebra, m a constant (as everywhere: the callers detach it):

    e = exp(s - m) (0 where hidden), den = sum_r e, num = e V
    de = g_num V^T + g_den,  ds = de * e,  dq = ds K,  dK = ds^T q,  dV = e^T g_num

and the per-slot key and value gradients are summed back onto positions one block piece at a
time. The exponentials e (O(N (P + 1) C), linear in N) are kept for the backward rather than
recomputed. Differentiable once.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def blocks(x: Tensor, C: int, nb: int) -> Tensor:
    """x (B, H, T, ...) zero-padded to nb * C positions and cut into (B, H, nb, C, ...)."""
    T = x.size(2)
    x = torch.cat([x, x.new_zeros(*x.shape[:2], nb * C - T, *x.shape[3:])], 2) if nb * C > T else x
    return x.reshape(*x.shape[:2], nb, C, *x.shape[3:])


def reach(window: int, C: int) -> int:
    """P: how many earlier blocks of C a window of W reaches into."""
    return -(-(window - 1) // C)


def key_blocks(x: Tensor, window: int, C: int, nb: int, fill=0.0) -> Tensor:
    """x (B, H, T, ...) -> (B, H, nb, (P + 1) C, ...) contiguous: block b holds the positions [(b - P) C,
    (b + 1) C), those outside [0, T) set to ``fill``."""
    P = reach(window, C)
    xb = blocks(x, C, nb)
    if fill != 0:
        T = x.size(2)
        xb = xb.clone()
        xb.view(*xb.shape[:2], nb * C, *xb.shape[4:])[:, :, T:] = fill
    xp = torch.cat([xb.new_full((*xb.shape[:2], P, *xb.shape[3:]), fill), xb], 2)  # P blocks before block 0
    return torch.cat([xp[:, :, j : j + nb] for j in range(P + 1)], 3)


def fold_key_blocks(g: Tensor, window: int, C: int, T: int) -> Tensor:
    """The adjoint of ``key_blocks``: per-slot gradients (B, H, nb, (P + 1) C, D) summed onto the
    positions (B, H, T, D) they were read from (slots outside [0, T) dropped)."""
    P = reach(window, C)
    B, H, nb, _, D = g.shape
    out = g[:, :, :, P * C :].clone()  # each block's own positions
    for j in range(P):  # piece j of block b holds block b - P + j
        out[:, :, : nb - P + j] += g[:, :, P - j :, j * C : (j + 1) * C]
    return out.reshape(B, H, nb * C, D)[:, :, :T]


def hidden_slots(T: int, window: int, C: int, key_padding_mask: Optional[Tensor], device) -> Tensor:
    """(B or 1, 1, nb, C, (P + 1) C) True where query a of block b does not see slot r: outside its
    band, before position 0, past T, or a padded key."""
    P = reach(window, C)
    nb = -(-T // C)
    a = torch.arange(C, device=device)[:, None]
    r = torch.arange((P + 1) * C, device=device)[None, :]
    band = (r > P * C + a) | (r < P * C + a - window + 1)  # the same in every block
    padded = torch.zeros(1, T, dtype=torch.bool, device=device) if key_padding_mask is None else \
        key_padding_mask[:, -T:].bool()
    pad = key_blocks(padded[:, None, :], window, C, nb, fill=True)  # (B, 1, nb, (P + 1) C)
    return band | pad[:, :, :, None, :]


class WindowSums(torch.autograd.Function):
    """(q, k, v (B, H, T, D), ``hidden_slots``, W, C) -> m, sum e, sum e v per query in blocks
    (B, H, nb, C[, D]); m = -inf and both sums 0 where a query sees no key."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, hidden: Tensor, window: int, C: int):
        nb = -(-q.size(2) // C)
        kb, vb = key_blocks(k, window, C, nb), key_blocks(v, window, C, nb)
        s = torch.matmul(blocks(q, C, nb), kb.transpose(-1, -2)).masked_fill_(hidden, float("-inf"))
        m = s.amax(-1)
        e = s.sub_(m.nan_to_num(nan=0.0, neginf=0.0)[..., None]).exp_()  # exp(-inf) = 0 where hidden
        num = torch.matmul(e, vb)
        ctx.save_for_backward(q, kb, vb, e)
        ctx.window, ctx.C = window, C
        ctx.mark_non_differentiable(m)
        return m, e.sum(-1), num

    @staticmethod
    def backward(ctx, _gm, g_den, g_num) -> Tuple:
        q, kb, vb, e = ctx.saved_tensors
        W, C = ctx.window, ctx.C
        B, H, T, D = q.shape
        nb = e.size(2)
        if g_num is None:
            g_num = e.new_zeros(*e.shape[:-1], vb.size(-1))
        de = torch.matmul(g_num, vb.transpose(-1, -2))  # (B, H, nb, C, (P + 1) C)
        if g_den is not None:
            de += g_den[..., None]
        ds = de.mul_(e)
        dq = torch.matmul(ds, kb).reshape(B, H, nb * C, D)[:, :, :T]
        dk = fold_key_blocks(torch.matmul(ds.transpose(-1, -2), blocks(q, C, nb)), W, C, T)
        dv = fold_key_blocks(torch.matmul(e.transpose(-1, -2), g_num), W, C, T)
        return dq, dk, dv, None, None, None
