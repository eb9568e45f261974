"""``--t2r-window W``: exact softmax over the last W tokens plus the state's linear branch for the
tokens older than W, in converted self-attention, for every registered state (``ops/window``'s
package docstring is the spec).

``SlidingWindow`` wraps no state: it is a second module beside ``T2RAttention.state_update`` and
asks the state only for what the interface gives every state (``states/base.py``: the parallel
form fed keys, values and inputs delayed by W; ``update`` with the token leaving the window;
``read`` / ``read_sums`` with the current query). Which combination applies is the state's own
normaliser, never its name: a sum-normalised state (``state_update.normalize``) joins the window
in LoLCATs' one normalised sum with a learned per-head factor a_h = exp(log_factor_h); a state
without a sum normaliser (RMS) is mixed with the window's softmax output by a learned per-head
sigmoid, Liger's mix.

New tensors (``<attn>.window.*``, accepted by ``checkpoint.is_new_tensor``), set at the swap:
- ``log_factor`` = 0 (a_h = 1): the sum exactly as LoLCATs writes it, each older key weighted by
  phi(q).phi(k) beside the window's exp(q.k). Texts no longer than W never reach the linear branch,
  so at the swap they get the teacher's exact softmax whatever the factor; past W the factor
  learns the scale between the two kinds of term.
- ``mix_logit`` = log 9 (the window's weight 0.9): Liger's mix is data-independent, so it applies
  also where the linear branch holds nothing yet (an RMS-normalised empty state outputs 0); an
  even 0.5 would halve the teacher's output on every text shorter than W at the swap, 0.9 starts
  close to the teacher's windowed softmax and leaves the linear branch a gradient.

``--t2r-window-branch`` (``both``, ``window``, ``linear``): which branches run. ``window`` is the
window alone (softmax over the last W tokens; the honest baseline, as an arm or as an inference
ablation of a windowed model); ``linear`` is the state alone over every key, no window and no
delay (the converted model without its window). Given at eval/generate time
(``--model-overrides "{'t2r_window_branch': 'window'}"``) it scores a windowed model with one branch.

Incremental state (``window_step.py``, batch-major beside the state's own key, so beam reordering,
batch shrinking and ``.clone()`` need nothing more): a W-slot ring buffer ``win_k`` (B, H, D, W),
``win_v`` (B, H, W, D + 1) ([v | 1], what ``update`` takes), ``win_phi_k`` (B, H, W, F) and
``win_in*`` (the token inputs the state's ``token_inputs`` gave each token when it came in: gates,
write strengths, a few numbers per head), ``win_bias`` (B, 1, 1, W) (0 for a valid slot, -inf for
an empty or padded one) and ``win_t`` (B,) the tokens seen; the linear state under the state's key.
Per layer B (H W (2 D + 1 + F + inputs) + W + state) numbers, constant in the generated length
(the window alone: B H W (2 D + 1), no features, inputs or state).
"""
import math
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..ops.window.chunked import shift, window_parts
from ..ops.window.combine import mix, sum_normalised
from .window_step import window_step

WINDOW_BRANCHES = ("both", "window", "linear")
MIX_INIT = math.log(9.0)  # sigmoid = 0.9 on the window (module docstring)


def delay_tokens(x: Tensor, key_padding_mask: Optional[Tensor], window: int):
    """x (T, B, C) and its padding (B, >= T) delayed by ``window`` positions: the first W positions
    hold no token (zeros, marked padded, so the state leaves them out)."""
    T, B = x.shape[:2]
    n = min(window, T)
    xd = torch.cat([x.new_zeros(n, *x.shape[1:]), x[: T - n]], 0)
    kpm = torch.zeros(B, T, dtype=torch.bool, device=x.device) if key_padding_mask is None else \
        key_padding_mask[:, -T:].bool()
    kpm_d = torch.cat([kpm.new_ones(B, n), kpm[:, : T - n]], 1)
    return xd, kpm_d


class SlidingWindow(nn.Module):
    def __init__(self, num_heads: int, window: int, summed: bool, branch: str = "both", dropout: float = 0.0):
        super().__init__()
        if int(window) < 1:
            raise ValueError(f"--t2r-window {window}: give the window in tokens (>= 1), or 0 for none")
        if str(branch) not in WINDOW_BRANCHES:
            raise ValueError(f"--t2r-window-branch {branch}: choose from {list(WINDOW_BRANCHES)}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"--t2r-window-dropout {dropout}: give the share of training forwards in [0, 1]")
        self.window, self.summed, self.branch = int(window), bool(summed), str(branch)
        self.dropout = float(dropout)
        if self.summed:
            self.log_factor = nn.Parameter(torch.zeros(num_heads))
        else:
            self.mix_logit = nn.Parameter(torch.full((num_heads,), MIX_INIT))

    @property
    def active(self) -> bool:
        """False for ``--t2r-window-branch linear``: the module then runs its state alone."""
        return self.branch != "linear"

    def dropped(self, training: bool) -> bool:
        """``--t2r-window-dropout p``: in a training forward, with probability p, the window is
        switched off and the state alone runs over every key (the ``linear`` branch), so that the
        linear branch must carry the output by itself for a share of the steps: hybrids otherwise
        collapse onto the window (arXiv 2510.05901). One draw per layer and forward (torch's
        generator, so fairseq's --seed fixes it); never at evaluation or decoding."""
        return training and self.dropout > 0 and bool(torch.rand(()) < self.dropout)

    def extra_repr(self) -> str:
        drop = f", dropout={self.dropout}" if self.dropout else ""
        return f"window={self.window}, {'sum' if self.summed else 'mix'}, branch={self.branch}{drop}"

    # -- training and scoring ---------------------------------------------------------------------
    @staticmethod
    def project(attn, x: Tensor, key_padding_mask: Optional[Tensor]):
        """Self-attention's projections for the window, made once: x (T, B, C) -> q (scaled), k, v
        (B, H, T, D) from one matmul of [s W_q | W_k | W_v], and phi_q, phi_k (B, H, T, F) mapped from
        q and k (zero at padded keys). The window needs q and k themselves for its scores, so the
        features come from them (H small (D -> F) maps) rather than from a second, folded
        projection of x (``FoldedProjections``), which cost as much as q or k again."""
        C, s = attn.embed_dim, attn.scaling
        qp, kp, vp = attn.q_proj, attn.k_proj, attn.v_proj
        w = torch.cat([qp.weight * s, kp.weight, vp.weight], 0)
        biases = (qp.bias, kp.bias, vp.bias)
        b = None if all(t is None for t in biases) else torch.cat(
            [w.new_zeros(C) if t is None else t * f for t, f in zip(biases, (s, 1.0, 1.0))], 0)
        y = nn.functional.linear(x, w, b)
        q, k, v = (attn._heads(t) for t in y.split(C, -1))  # split: its backward is one cat, not 3 padded copies
        fm = attn.feature_map
        return q, k, v, fm.forward_queries(q), ops.mask_padded_keys(fm.forward_keys(k), key_padding_mask)

    def parallel(self, attn, x: Tensor, key_padding_mask: Optional[Tensor], phi_q: Tensor, phi_k: Tensor,
                 v: Tensor, q: Optional[Tensor] = None, k: Optional[Tensor] = None) -> Tensor:
        """x (T, B, C) the layer input; phi_q, phi_k (B, H, T, F) (phi_k zero at padded keys); v (B, H,
        T, D); q (scaled), k (B, H, T, D) as ``project`` gives them (projected here when None). -> (B,
        H, T, D): the chunked window (O(T W)) and the state's parallel form on the stream delayed by
        W, combined."""
        ct = ops.compute_dtype(v.dtype)
        q = attn._heads(attn.q_proj(x) * attn.scaling).to(ct) if q is None else q.to(ct)
        k = attn._heads(attn.k_proj(x)).to(ct) if k is None else k.to(ct)
        vc = v.to(ct)
        m, d_win, n_win = window_parts(q, k, vc, self.window, key_padding_mask)
        if self.branch == "window":
            return (n_win / torch.where(d_win > 0, d_win, torch.ones_like(d_win))[..., None]).to(v.dtype)
        su, W = attn.state_update, self.window
        xd, kpm_d = delay_tokens(x, key_padding_mask, W)
        phi_kd = ops.mask_padded_keys(shift(phi_k, W), kpm_d)
        if self.summed:  # [v | 1] unnormalised: phi(q).S and phi(q).z side by side
            v1 = torch.cat([vc, vc.new_ones(*vc.shape[:-1], 1)], -1)
            nd = su.parallel(phi_q, phi_kd, shift(v1, W), xd, attn.k_proj, kpm_d, attn.eps, normalize=False)
            n_lin, d_lin = nd.to(ct).split([nd.size(-1) - 1, 1], -1)
            out = sum_normalised(m, d_win, n_win, n_lin, d_lin[..., 0], self.log_factor.to(ct))
        else:
            y_lin = su.parallel(phi_q, phi_kd, shift(vc, W), xd, attn.k_proj, kpm_d, attn.eps).to(ct)
            y_win = n_win / torch.where(d_win > 0, d_win, torch.ones_like(d_win))[..., None]
            out = mix(y_win, y_lin, self.mix_logit.to(ct))
        return out.to(v.dtype)

    # -- one token at inference (no autograd; the ring buffer written in place) -------------------
    def step(self, attn, x: Tensor, q: Tensor, k: Tensor, phi_q: Tensor, phi_k: Tensor, v1: Tensor,
             pad: Optional[Tensor], buf: Dict[str, Optional[Tensor]]) -> Tensor:
        """x (B, C) the token's layer input; q (scaled), k (B, H, D) from the step's one projection
        (``FoldedProjections.step`` leaves them unfolded for a window); phi_q (B, H, 1, F), phi_k (B, H,
        F) (zero if padded); v1 (B, H, 1, D + 1) = [v | 1]; pad (B, 1) True = padded or None; ``buf`` the
        module's incremental state (filled here). -> (B, H, D) in x's dtype (``window_step.py``)."""
        return window_step(self, attn, x, q, k, phi_q, phi_k, v1, pad, buf)

    def attention_weights(self, attn, x: Tensor, key_padding_mask: Optional[Tensor], phi_q: Tensor,
                          phi_k: Tensor) -> Tensor:
        """(B, H, T, T): the parallel form applied to the identity as values (attention transfer)."""
        B, H, T, _ = phi_q.shape
        eye = torch.eye(T, dtype=ops.compute_dtype(phi_q.dtype), device=phi_q.device).expand(B, H, T, T)
        return self.parallel(attn, x, key_padding_mask, phi_q, phi_k, eye)


def build_window(num_heads: int, state_update, window: int = 0, window_branch: str = "both",
                 window_dropout: float = 0.0) -> Optional[SlidingWindow]:
    """The window of ``--t2r-window`` (None for 0): its combination follows the state's normaliser."""
    if not window:
        return None
    return SlidingWindow(num_heads, window, state_update.normalize, window_branch, window_dropout)
