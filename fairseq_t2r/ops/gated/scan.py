"""The gated state scan h_l = a_l * h_{l-1} + x_l as an autograd Function with a hand-written
backward: the chunk-to-chunk state of the gated forms (``chunked.py`` per head, ``feature.py``
per feature, which runs it at two levels).

Plain autograd through a Python loop of L steps costs a graph node per op and per step, and
every ``x[:, :, l]`` it reads back-propagates as a full-size zero tensor with one slice filled
(O(L^2) memory traffic: most of the per-feature form's time before). Here the forward is one
``addcmul`` per step into one buffer; the backward is the reverse scan

    G_L = dL/dh_L,   G_l = a_l * G_{l+1} + dL/dh_l (the states read),   l = L-1 .. 0
    dL/dx_l = G_{l+1},   dL/da_l = sum over the state's columns of G_{l+1} * h_l,   dL/dh_0 = G_0

(h_l here is the state entering step l), again one ``addcmul`` per step.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..common import State


class GatedScan(torch.autograd.Function):
    """a (N, L, G) with G = 1 (one gate per row block) or F, x (N, L, F, E), h0 (N, F, E) ->
    (states entering each step (N, L, F, E), final state (N, F, E)). Gates a are factors (not
    logs): the caller exponentiates log-gates <= 0, so nothing here can overflow."""

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor, h0: Tensor) -> Tuple[Tensor, Tensor]:
        L = x.size(1)
        at = a.transpose(0, 1).unsqueeze(-1).contiguous()  # (L, N, G, 1): one contiguous slice per step
        xt = x.transpose(0, 1)
        hs = x.new_empty((L + 1,) + tuple(h0.shape))  # hs[l]: the state entering step l
        hs[0] = h0
        for step in range(L):
            torch.addcmul(xt[step], at[step], hs[step], out=hs[step + 1])
        ctx.save_for_backward(at, hs)
        ctx.gate_features = a.size(-1)
        return hs[:L].transpose(0, 1), hs[L]

    @staticmethod
    @once_differentiable
    def backward(ctx, d_states: Tensor, d_final: Tensor):
        at, hs = ctx.saved_tensors
        L = at.size(0)
        gs = torch.zeros_like(hs)  # gs[l]: dL/d(state entering step l), all paths
        if d_final is not None:
            gs[L] = d_final
        dst = None if d_states is None else d_states.transpose(0, 1)
        for step in range(L - 1, -1, -1):
            if dst is None:
                torch.mul(at[step], gs[step + 1], out=gs[step])
            else:
                torch.addcmul(dst[step], at[step], gs[step + 1], out=gs[step])
        da = dx = None
        if ctx.needs_input_grad[0]:
            da = (gs[1:] * hs[:L]).sum(-1)  # (L, N, F)
            if ctx.gate_features == 1:
                da = da.sum(-1, keepdim=True)
            da = da.transpose(0, 1)
        if ctx.needs_input_grad[1]:
            dx = gs[1:].transpose(0, 1)
        return da, dx, (gs[0] if ctx.needs_input_grad[2] else None)


def gated_scan(a: Tensor, x: Tensor, h0: Tensor) -> Tuple[Tensor, Tensor]:
    """``GatedScan`` over any leading dims: a (..., L, G), x (..., L, F, E), h0 (..., F, E) ->
    (states entering each step (..., L, F, E), final state (..., F, E))."""
    lead = x.shape[:-3]
    L, F, E = x.shape[-3:]
    states, final = GatedScan.apply(a.reshape(-1, L, a.size(-1)), x.reshape(-1, L, F, E), h0.reshape(-1, F, E))
    return states.reshape(lead + (L, F, E)), final.reshape(lead + (F, E))


def scan_states(a: Tensor, x: Tensor, initial_state: Optional[State]) -> Tuple[Tensor, State]:
    """The chunk-to-chunk scan of the gated forms, their (S, z) carried as one [S | z]: a (..., n, G)
    the chunks' gates, x (..., n, F, D + 1) each chunk's own [S | z], ``initial_state`` (S (..., F, D),
    z (..., F)) or None -> ([S | z] entering each chunk (..., n, F, D + 1), the final (S, z))."""
    if initial_state is None:
        h0 = x.new_zeros(x.shape[:-3] + x.shape[-2:])
    else:
        h0 = torch.cat([initial_state[0], initial_state[1].unsqueeze(-1)], -1).to(x.dtype)
    entering, final = gated_scan(a, x, h0)
    return entering, (final[..., :-1].contiguous(), final[..., -1].contiguous())
