"""The chunked causal form: O(T * C) work, memory linear in T. Chunks of C positions attend to
each other quadratically and to earlier chunks through a running (F, D) state; it can start from
a given state and return the final one (prefill for incremental decoding).

Under autograd it is ``ChunkedLinearAttention``, whose hand-written backward
(``chunked_passes``) recomputes the chunk states: only phi_q, phi_k, v and one denominator per
position are kept between forward and backward. Only when gradients must flow through a given
or returned state does it fall back to plain autograd (``_causal_chunked_autograd``), which
keeps every intermediate.
"""
from typing import Optional

import torch
from torch import Tensor

from ..common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, State, autocast_off, compute_dtype
from .chunked_passes import chunked_backward, chunked_forward


@autocast_off
def causal_chunked(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    initial_state: Optional[State] = None,
    return_state: bool = False,
):
    """Exact causal linear attention in chunks. phi_q/phi_k (B, H, T, F), v (B, H, T, D) ->
    out (B, H, T, D) in v's dtype, laid out like v; with ``return_state`` (out, (S, z)).
    ``initial_state``: the (S, z) of the tokens before these (as ``recurrent_step`` keeps it)."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (phi_q, phi_k, v))
    if needs_grad:
        if initial_state is None and not return_state:
            return ChunkedLinearAttention.apply(phi_q, phi_k, v, eps, chunk_size)
        return _causal_chunked_autograd(phi_q, phi_k, v, eps, chunk_size, initial_state, return_state)
    out, _, state = chunked_forward(phi_q, phi_k, v, eps, chunk_size, initial_state, return_state)
    return (out, state) if return_state else out


class ChunkedLinearAttention(torch.autograd.Function):
    """Causal linear attention in chunks with a hand-written backward that recomputes the chunk
    states and the numerator (``chunked_passes``): it keeps only phi_q, phi_k, v and one
    denominator per position between forward and backward."""

    @staticmethod
    def forward(ctx, phi_q, phi_k, v, eps, chunk_size):
        out, den, _ = chunked_forward(phi_q, phi_k, v, eps, chunk_size)
        ctx.save_for_backward(phi_q, phi_k, v, den)
        ctx.eps, ctx.chunk_size = eps, chunk_size
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        phi_q, phi_k, v, den = ctx.saved_tensors
        dq, dk, dv = chunked_backward(phi_q, phi_k, v, den, dout, ctx.eps, ctx.chunk_size)
        return dq, dk, dv, None, None


def _causal_chunked_autograd(phi_q, phi_k, v, eps, chunk_size, initial_state, return_state):
    """Plain differentiable chunked form (autograd keeps every intermediate); used only when
    gradients must flow through a given initial state or a returned state."""
    out_dtype = v.dtype
    ct = compute_dtype(out_dtype)
    phi_q, phi_k, v = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:
        phi_q = torch.nn.functional.pad(phi_q, (0, 0, 0, pad))
        phi_k = torch.nn.functional.pad(phi_k, (0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    n = (T + pad) // C
    q = phi_q.reshape(B, H, n, C, F)
    k = phi_k.reshape(B, H, n, C, F)
    vc = v.reshape(B, H, n, C, D)
    kv = torch.matmul(k.transpose(-1, -2), vc)
    ksum = k.sum(-2)
    S_incl = kv.cumsum(2)
    z_incl = ksum.cumsum(2)
    if initial_state is not None:
        S0, z0 = initial_state
        S_incl = S_incl + S0.to(ct).unsqueeze(2)
        z_incl = z_incl + z0.to(ct).unsqueeze(2)
    S_prev = S_incl - kv
    z_prev = z_incl - ksum
    intra = torch.matmul(q, k.transpose(-1, -2))
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril_()
    intra = intra.masked_fill(~causal, 0.0)
    num = torch.matmul(intra, vc) + torch.matmul(q, S_prev)
    den = intra.sum(-1) + torch.matmul(q, z_prev.unsqueeze(-1)).squeeze(-1)
    out = num / den.clamp(min=eps).unsqueeze(-1)
    out = out.reshape(B, H, n * C, D)[:, :, :T].to(out_dtype)
    if return_state:
        return out, (S_incl[:, :, -1], z_incl[:, :, -1])
    return out
