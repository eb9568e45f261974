"""The two ways the window's softmax and the linear branch become one output (see the package
docstring for the design and why): ``sum_normalised`` (LoLCATs' one normalised sum, states with a
sum normaliser) and ``mix`` (Liger's per-head sigmoid mix, states without one)."""
import torch
from torch import Tensor


def _per_head(x: Tensor, like: Tensor) -> Tensor:
    """A per-head (H,) tensor shaped to broadcast against ``like`` (B, H, ...)."""
    return x.reshape(-1, *([1] * (like.dim() - 2)))


def sum_normalised(win_max: Tensor, win_den: Tensor, win_num: Tensor, lin_num: Tensor, lin_den: Tensor,
                   log_factor: Tensor) -> Tensor:
    """(sum_win exp(s) v + a phi(q).S) / (sum_win exp(s) + a phi(q).z), a = exp(log_factor), stably.

    win_max (B, H, ...): the window's max score m (-inf where the window is empty); win_den: sum_win
    exp(s - m); win_num (B, H, ..., D): sum_win exp(s - m) v; lin_num (..., D): phi(q).S; lin_den:
    phi(q).z; log_factor (H,) (-inf: no linear branch). The shift is c = max(m, log(a phi(q).z)), both
    parts scaled by exp(-c) (each weight <= 1, the largest exactly 1), c and m detached: the result
    does not depend on them. A linear total <= 0 (only a signed feature map gives one) counts as no
    linear mass; a query that sees nothing outputs 0."""
    m = win_max.detach()
    has_lin = lin_den > 0
    safe_den = torch.where(has_lin, lin_den, torch.ones_like(lin_den))
    log_lin = (_per_head(log_factor, lin_den) + torch.log(safe_den)).masked_fill(~has_lin, float("-inf"))
    c = torch.maximum(m, log_lin.detach()).nan_to_num(nan=0.0, neginf=0.0)  # nothing visible: any finite shift
    w_win = torch.exp(m - c)  # exp(-inf) = 0 for an empty window
    w_lin = torch.exp(log_lin - c)  # 0 without linear mass, where y_lin = lin_num / 1 is finite
    den = w_win * win_den + w_lin
    den = torch.where(den > 0, den, torch.ones_like(den))
    # the per-query weights divided first: two products on the (..., D) outputs, no division there
    return (w_win / den)[..., None] * win_num + (w_lin / (safe_den * den))[..., None] * lin_num


def mix(win_out: Tensor, lin_out: Tensor, mix_logit: Tensor) -> Tensor:
    """sig(g_h) * window output + (1 - sig(g_h)) * linear output; outputs (B, H, ..., D), g (H,)."""
    g = torch.sigmoid(_per_head(mix_logit, win_out))
    return g * win_out + (1 - g) * lin_out
