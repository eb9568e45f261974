"""Token-by-token float64 reference of window + linear attention, written from the definition.

For each query i: the window's terms exp(s_ij) (unshifted: float64 and moderate scores make the
plain sum exact, so the forms' max-shift is checked, not copied), and the linear branch read from
a state that key j entered at step j + W. The state is generic: ``init`` builds it, ``step(state,
phi_k_j, v_j, valid_j)`` pushes one key (what a decayed or gated state changes), ``read(state,
phi_q_i)`` returns (numerator (B, H, D), denominator (B, H) or None). A None denominator means a
state without a sum normaliser: its numerator is the branch's output and the two are mixed
(``mix_logit``), else summed with the factor exp(log_factor) (the package docstring)."""
from typing import Callable, Optional

import torch
from torch import Tensor


def additive_init(phi_k: Tensor, v: Tensor):
    B, H, _, F = phi_k.shape
    return (phi_k.new_zeros(B, H, F, v.size(-1)), phi_k.new_zeros(B, H, F))


def additive_step(state, phi_k_j: Tensor, v_j: Tensor, valid_j: Tensor):
    """T2R's state: S += phi(k) v^T, z += phi(k), for the valid rows of the batch."""
    S, z = state
    f = phi_k_j * valid_j[:, None, None].to(phi_k_j.dtype)
    return S + f[..., :, None] * v_j[..., None, :], z + f


def additive_read(state, phi_q_i: Tensor):
    S, z = state
    return torch.matmul(phi_q_i[..., None, :], S)[..., 0, :], (phi_q_i * z).sum(-1)


def window_naive(q: Tensor, k: Tensor, v: Tensor, phi_q: Tensor, phi_k: Tensor, window: int,
                 log_factor: Optional[Tensor] = None, mix_logit: Optional[Tensor] = None,
                 key_padding_mask: Optional[Tensor] = None, init: Callable = additive_init,
                 step: Callable = additive_step, read: Callable = additive_read) -> Tensor:
    """q, k, v (B, H, T, D) (q scaled as fairseq scales it), phi_q, phi_k (B, H, T, F),
    key_padding_mask (B, T) True = pad; log_factor (H,) for a summed state, mix_logit (H,) for a
    mixed one. Returns (B, H, T, D) in float64."""
    q, k, v, phi_q, phi_k = (x.double() for x in (q, k, v, phi_q, phi_k))
    B, H, T, D = v.shape
    valid = torch.ones(B, T, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask.bool()
    state = init(phi_k, v)
    out = torch.zeros(B, H, T, D, dtype=torch.float64)
    for i in range(T):
        if i - window >= 0:  # key i-W leaves the window and enters the linear state
            state = step(state, phi_k[:, :, i - window], v[:, :, i - window], valid[:, i - window])
        d_win = torch.zeros(B, H, dtype=torch.float64)
        n_win = torch.zeros(B, H, D, dtype=torch.float64)
        for j in range(max(0, i - window + 1), i + 1):
            e = torch.exp((q[:, :, i] * k[:, :, j]).sum(-1)) * valid[:, None, j]
            d_win = d_win + e
            n_win = n_win + e[..., None] * v[:, :, j]
        n_lin, d_lin = read(state, phi_q[:, :, i])
        if d_lin is None:
            g = torch.sigmoid(mix_logit.double())[:, None]
            y_win = torch.where(d_win[..., None] > 0, n_win / d_win.clamp(min=1e-300)[..., None], 0.0)
            out[:, :, i] = g * y_win + (1 - g) * n_lin
        else:
            a = torch.exp(log_factor.double())[None, :]
            d_lin = torch.where(d_lin > 0, a * d_lin, 0.0)  # a non-positive total is no linear mass
            n_lin = torch.where(d_lin[..., None] > 0, a[..., None] * n_lin, 0.0)
            den = d_win + d_lin
            out[:, :, i] = torch.where(den[..., None] > 0, (n_win + n_lin) / den.clamp(min=1e-300)[..., None], 0.0)
    return out
