"""The delta rule (DeltaNet) and the gated delta rule (Gated DeltaNet):
S_i = g_i (I - beta_i k_i k_i^T) S_{i-1} + beta_i k_i v_i^T, beta_i = sigmoid(W_b x_i + b_b),
g_i the ``gate`` state's gate, one per head (1 for the plain rule), given to the ops as its log
like every gate (``ops.Step``); k_i, q_i are phi(k_i),
phi(q_i) L2-normalised inside ``ops.delta_*``. No z: the rule overwrites values, so a running key
sum would not track them; the output is RMS-normalised (``--t2r-norm rms``, implied).

beta comes from a new Linear (C -> H) with zero weight and the bias that gives beta = 2^-8
(``BETA_INIT``) for every token. A small beta makes the rule nearly additive at the swap
(S ~ beta sum_j k_j v_j^T: additive T2R with L2-normalised features, whose scale the RMS norm
removes; the erase term is second order in beta), and lets it learn where to overwrite (through
the sigmoid, in log space: the RMS norm makes the output insensitive to beta's scale alone).
DeltaNet's init (random weight, beta ~ 0.5 from the start) would replace the pretrained model's
long-range sums by a recency-weighted memory at the swap. Measured on a random layer (C 64,
4 heads, F 32, 512 tokens, float64): RMS-normalised outputs differ from that additive limit by
0.4% (positions < 16), 2.6% (16-128), 8.7% (128-512) at 2^-8; 3%, 20%, 55% at 2^-5. The outputs
are beta-sized at the swap, so the RMS norm's floor is scaled by BETA_INIT^2.

The incremental state is ``S`` (B, H, F, D) alone, updated in place by ``ops.delta_step``.
"""
import math

import torch
from torch import nn

from ... import ops
from .base import RMS_EPS, StateUpdate, constant_linear, register_state_update
from .gate import ForgetGate

BETA_INIT = 2.0 ** -8


@register_state_update("delta")
class DeltaState(StateUpdate):
    order = 3
    norms = ("rms",)
    state_key = "S"
    rms_eps = RMS_EPS * BETA_INIT ** 2  # a delta rule's outputs scale with beta, small at the swap
    arm = ("T2R + delta rule, swap + finetune", ("--t2r-norm", "rms"))

    def __init__(self, num_heads, head_dim, feature_dim, norm=None, **options):
        super().__init__(num_heads, head_dim, feature_dim, norm, **options)
        # beta = sigmoid(b) = BETA_INIT at the swap (see the module docstring)
        self.beta_proj = constant_linear(num_heads * head_dim, num_heads, math.log(BETA_INIT / (1 - BETA_INIT)))

    @classmethod
    def check(cls, norm, head_dim, feature_dim, **options):
        if norm == "sum":
            raise ValueError(f"--t2r-state {cls.name} has no sum normaliser (the delta rule overwrites values, a "
                             f"running key sum would not track them): leave --t2r-norm out or pass --t2r-norm rms")
        super().check(norm, head_dim, feature_dim)

    @property
    def weights_are_distributions(self) -> bool:
        return False  # signed

    def log_gates(self, x, k_proj, key_padding_mask):
        return None  # the plain delta rule: g = 1

    def token_inputs(self, x, k_proj, key_padding_mask):
        """(log_g (B, H, T) or None, beta (B, H, T)) in ``compute_dtype`` (the ops' order), the
        log-gate 0 at padded positions (beta there does not matter: their features are 0)."""
        logits = nn.functional.linear(x, self.beta_proj.weight, self.beta_proj.bias)
        beta = torch.sigmoid(logits.to(ops.compute_dtype(x.dtype))).permute(1, 2, 0)
        return self.log_gates(x, k_proj, key_padding_mask), beta

    def parallel_form(self, phi_q, phi_k, v, inputs, eps, initial_state, return_state, normalize, weight_dropout):
        log_g, beta = inputs
        return ops.delta_parallel(phi_q, phi_k, v, log_g, beta, eps=ops.DEFAULT_NORM_EPS,
                                  initial_state=initial_state, return_state=return_state)

    def step(self, phi_q, phi_k, v1, inputs, state, eps, out_dtype):
        log_g, beta = inputs
        out, state = ops.delta_step(phi_q, phi_k.unsqueeze(2), v1[..., :-1], log_g, beta, state=state,
                                    eps=ops.DEFAULT_NORM_EPS, inplace=True)
        return self.finish(out if out.dtype == out_dtype else out.to(out_dtype)), state

    def update(self, state, phi_k, v1, inputs):
        log_g, beta = inputs
        q = phi_k.new_zeros(phi_k.shape).unsqueeze(2)
        return ops.delta_step(q, phi_k.unsqueeze(2), v1[..., :-1], log_g, beta, state=state,
                              eps=ops.DEFAULT_NORM_EPS, inplace=True)[1]

    def read(self, phi_q, state, eps, out_dtype, normalize=None):
        q = ops.l2_normalize(phi_q.to(state.dtype), ops.DEFAULT_NORM_EPS)
        return torch.matmul(q, state).to(out_dtype)


@register_state_update("gated-delta")
class GatedDeltaState(ForgetGate, DeltaState):
    order = 4
    arm = ("T2R + gated delta rule, swap + finetune", ("--t2r-gate-source", "key", "--t2r-norm", "rms"))

    @classmethod
    def check(cls, norm, head_dim, feature_dim, **options):
        if str(options.get("gate_shape", "head")) == "feature":
            raise ValueError("--t2r-state gated-delta has one gate per head (the delta rule scales the whole state): "
                             "use --t2r-gate-shape head, or --t2r-state gate for per-feature gates")
        super().check(norm, head_dim, feature_dim, **options)

    # ``log_gates`` is ForgetGate's: log g (B, H, T), already 0 at padded positions
