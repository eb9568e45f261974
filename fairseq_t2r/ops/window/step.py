"""One decoding step of window + linear attention: a W-slot ring buffer plus the linear state.

The buffer holds the last W tokens' keys, values and key features (the features so that the
evicted token enters the linear state without the feature map), and which slots hold a valid
(non-padded) token. Token t goes to slot t mod W; the token it evicts, t - W, is first pushed into
the linear state (``push``, additive by default: the same callables as ``naive``). Memory per
layer: B H (W (2 D + F) + F D + F) numbers and B W flags, whatever the generated length.
"""
from dataclasses import dataclass, fields
from typing import Callable, Optional

import torch
from torch import Tensor

from ..common import compute_dtype, refuse_inputs
from .combine import mix, sum_normalised
from .naive import additive_read, additive_step


@dataclass
class WindowState:
    k: Tensor      # (B, H, W, D)
    v: Tensor      # (B, H, W, D)
    phi_k: Tensor  # (B, H, W, F), zero in slots not (validly) filled
    valid: Tensor  # (B, W) bool
    linear: tuple  # the linear state, e.g. (S (B, H, F, D), z (B, H, F))
    t: int = 0     # tokens seen so far (the same for every row of the batch)


def init_state(B: int, H: int, window: int, D: int, F: int, dtype=torch.float32, device=None) -> WindowState:
    ct = compute_dtype(dtype)
    zeros = lambda *shape, dt=ct: torch.zeros(*shape, dtype=dt, device=device)  # noqa: E731
    return WindowState(zeros(B, H, window, D), zeros(B, H, window, D), zeros(B, H, window, F),
                       zeros(B, window, dt=torch.bool), (zeros(B, H, F, D), zeros(B, H, F)))


def _map(state: WindowState, fn) -> WindowState:
    new = {f.name: getattr(state, f.name) for f in fields(state)}
    for name in ("k", "v", "phi_k", "valid"):
        new[name] = fn(new[name])
    new["linear"] = tuple(fn(x) for x in state.linear)
    return WindowState(**new)


def reorder(state: WindowState, new_order: Tensor) -> WindowState:
    """Beam search: rows of the batch reordered (fairseq's reorder_incremental_state)."""
    return _map(state, lambda x: x.index_select(0, new_order))


def clone(state: WindowState) -> WindowState:
    return _map(state, lambda x: x.clone())


def window_step(phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor] = None, beta: Optional[Tensor] = None,
                *, state: Optional[WindowState] = None, eps: Optional[float] = None, inplace: bool = False,
                q: Tensor, k: Tensor, window: int = 0, pad: Optional[Tensor] = None,
                log_factor: Optional[Tensor] = None, mix_logit: Optional[Tensor] = None,
                push: Callable = additive_step, read: Callable = additive_read):
    """One token, under the shared step signature (``common.Step``): phi_q, phi_k (B, H, 1, F), v (B, H,
    1, D); no log_g or beta (refused: the linear state's own update is ``push``); ``eps`` unused (the
    combined normaliser is >= 1 by construction). Options: q (scaled), k (B, H, 1, D) the softmax
    branch's query and key; ``window`` W, read only to make the empty state when ``state`` is None; pad
    (B,) True = padded token. Returns (output (B, H, 1, D) in v's dtype, the state). The ring buffer is
    written in place (a copy of W slots per token would cost more than the attention itself): with
    ``inplace=False`` the given state is cloned first, ``inplace=True`` updates it."""
    refuse_inputs("ops.window.window_step", log_g=log_g, beta=beta)
    q, k, v, phi_q, phi_k = (x.squeeze(2) for x in (q, k, v, phi_q, phi_k))
    if state is None:
        if window < 1:
            raise ValueError("ops.window.window_step: pass state=init_state(...) or window=W (>= 1) for the empty state")
        state = init_state(v.size(0), v.size(1), window, v.size(-1), phi_k.size(-1), v.dtype, v.device)
    elif not inplace:
        state = clone(state)
    ct = state.k.dtype
    W = state.k.size(2)
    slot = state.t % W
    valid_now = torch.ones(q.size(0), dtype=torch.bool, device=q.device) if pad is None else ~pad.bool()
    if state.t >= W:  # the token in the slot leaves the window and enters the linear state
        state.linear = push(state.linear, state.phi_k[:, :, slot], state.v[:, :, slot], state.valid[:, slot])
    state.k[:, :, slot], state.v[:, :, slot] = k, v
    state.phi_k[:, :, slot] = phi_k if pad is None else phi_k * valid_now[:, None, None].to(ct)
    state.valid[:, slot] = valid_now
    state.t += 1
    # a row vector times K^T: a (W, D) x (D, 1) batched product is several times slower on CPU
    s = torch.matmul(q.to(ct)[..., None, :], state.k.transpose(-1, -2))[..., 0, :]  # (B, H, W)
    s = s.masked_fill(~state.valid[:, None, :], float("-inf"))  # empty or padded slots
    m = s.amax(-1)
    e = torch.exp(s - m.nan_to_num(nan=0.0, neginf=0.0)[..., None])
    d_win, n_win = e.sum(-1), torch.matmul(e[..., None, :], state.v)[..., 0, :]
    n_lin, d_lin = read(state.linear, phi_q.to(ct))
    if d_lin is None:
        y_win = n_win / torch.where(d_win > 0, d_win, torch.ones_like(d_win))[..., None]
        out = mix(y_win, n_lin, mix_logit.to(ct))
    else:
        out = sum_normalised(m, d_win, n_win, n_lin, d_lin, log_factor.to(ct))
    return out.to(v.dtype).unsqueeze(2), state
