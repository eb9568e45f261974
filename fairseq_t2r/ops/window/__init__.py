"""Sliding-window softmax + linear attention in one head, as pure ops (not yet wired into T2RAttention).

Semantics (causal self-attention, query i, window W >= 1). Inputs are the teacher's own projections:
``q`` already scaled by head_dim**-0.5 (as fairseq scales it), so ``s_ij = q_i . k_j`` is the
teacher's score; ``phi_q``, ``phi_k`` the feature-mapped queries and keys of the linear branch.
- window: the keys j in [i-W+1, i] (by position), padded keys excluded: exact softmax terms exp(s_ij);
- linear branch: the keys j <= i-W, through the linear state fed with keys and values *delayed by W*
  (key j enters the state at step j+W, when it leaves the window), padded keys excluded. With
  left padding (fairseq) or right padding the window by position is the last W real tokens.

Combination, states with a sum normaliser (additive T2R, decay, gate: ``--t2r-norm sum``) --
LoLCATs' form, one normalised sum with a learned per-head factor a_h = exp(log_factor_h):

    y_i = (sum_win exp(s_ij) v_j + a_h phi(q_i).S_i) / (sum_win exp(s_ij) + a_h phi(q_i).z_i)

where S_i, z_i are the delayed state's sums. Numerics (``combine.sum_normalised``): the window's
score total D_w = sum_win exp(s_ij) and the linear branch's total D_l = a_h phi(q_i).z_i are two
parts of one normaliser, so the shift is c_i = max(max_win s_ij, log D_l) -- the max over *all*
terms, the linear branch counted as one term of log-weight log D_l -- and both parts are scaled by
exp(-c_i). The form is invariant to c_i (it cancels), so this is the unshifted LoLCATs sum
exactly; each shifted weight is <= 1 (no overflow) and the largest is exactly 1 (the denominator
is >= 1: no 0/0, no clamp). The linear part enters as w_l * y_l with w_l = exp(log D_l - c_i) and
y_l = phi(q).S / phi(q).z its own normalised output, so exp(-c_i) is never formed alone (it would
overflow when every score is very negative). c_i is a constant of the gradient (detached), as the
max is in any stable softmax. LoLCATs' released code shifts the window's exponentials by their
own max but not the linear terms, which makes the branches' balance depend on the window's max
score; the joint shift keeps the sum they define. A query with no visible key (a left-padded
position) outputs 0, as ``ops.softmax_attention`` does. Equivalently y_i = (1 - lam_i) y_win +
lam_i y_lin with lam_i = D_l / (D_w + D_l): a data-dependent mix, which with log_factor = -inf
(a_h = 0) is the teacher's softmax over the window, and with W >= the sequence its softmax.

States without a sum normaliser (delta, gated delta with ``--t2r-norm rms``: phi(q).S is a signed
read-out, there is no positive total to add to D_w) -- Liger's mix (``combine.mix``): the window's
own normalised softmax output and the linear branch's (normed) output, mixed per head by a learned
sigmoid: y_i = sig(g_h) y_win + (1 - sig(g_h)) y_lin. A sum of an unnormalised read-out into a
softmax normaliser would mix incompatible scales; the mix keeps each branch on its own scale.

Forms: ``naive`` (token-by-token float64 reference; the delayed stream's state update is a
callable step, so gated/decayed states plug in), ``chunked`` (training: a banded softmax computed
chunk by chunk plus the additive linear part on the shifted stream; O(N W) work and memory),
``step`` (decoding: a W-slot ring buffer of keys/values/features plus the linear state; the evicted
token is pushed into the state; constant memory in the generated length; beam reordering).
"""
from .chunked import shift, windowed_linear, windowed_softmax
from .combine import mix, sum_normalised
from .naive import additive_read, additive_step, window_naive
from .step import WindowState, clone, init_state, reorder, window_step

__all__ = ["shift", "windowed_linear", "windowed_softmax", "mix", "sum_normalised", "window_naive", "additive_read",
           "additive_step", "WindowState", "clone", "init_state", "reorder", "window_step"]
