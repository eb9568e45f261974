"""A per-head decay (RetNet, SUPRA; Mao 2022's decaying fast weights): S_i = g_h S_{i-1} +
phi(k_i) v_i^T, z likewise, g_h = sigmoid(decay_logit_h) the same at every position.

At the swap (``--t2r-decay-init``): ``near-one`` g_h = 1 - 2^-12 for every head (a half-life of
~2800 tokens: starts as additive T2R), learned; ``retnet``: RetNet's g_h = 1 - 2^(-5 - h) (fixed
with ``--t2r-decay-fixed``: RetNet / SUPRA). A padded position does not decay (log-gate 0).
"""
import torch
from torch import Tensor, nn

from ... import ops
from .base import NEAR_ONE, RunningSums, logit, register_state_update

DECAY_INITS = ("near-one", "retnet")


def retnet_decays(num_heads: int) -> Tensor:
    """RetNet's per-head decays g_h = 1 - 2^(-5 - h), h = 0..H-1, in float64."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(num_heads, dtype=torch.float64))


def initial_decays(decay_init: str, num_heads: int) -> Tensor:
    """The per-head decays at the swap (float64, (H,))."""
    if str(decay_init) == "retnet":
        return retnet_decays(num_heads)
    return torch.full((num_heads,), NEAR_ONE, dtype=torch.float64)


def decay_parameter(module: nn.Module, logits: Tensor, fixed: bool) -> None:
    """``module.decay_logit``: a buffer when ``fixed``, else a parameter."""
    if fixed:
        module.register_buffer("decay_logit", logits)
    else:
        module.decay_logit = nn.Parameter(logits)


@register_state_update("decay")
class DecayState(RunningSums):
    order = 1
    options = ("decay_init", "decay_fixed")
    choices = {"decay_init": DECAY_INITS}
    arm = ("T2R + per-head decay, swap + finetune", ())

    def __init__(self, num_heads, head_dim, feature_dim, norm=None, decay_init="near-one", decay_fixed=False, **_):
        super().__init__(num_heads, head_dim, feature_dim, norm)
        decay_parameter(self, logit(initial_decays(decay_init, num_heads)).float(), decay_fixed)

    def token_inputs(self, x, k_proj, key_padding_mask):
        log_decay = nn.functional.logsigmoid(self.decay_logit.float())
        return ops.decay_log_gates(log_decay, x.size(1), x.size(0), key_padding_mask)
