"""A per-feature decay: the per-head decay of ``decay.py`` with one g_{h,f} per head and feature,
data-independent (the same at every position; a fixed-rate GLA):

    S_i = diag(g_h) S_{i-1} + phi(k_i) v_i^T,    z likewise,    g_{h,f} = sigmoid(decay_logit_{h,f})

so each feature of a head keeps its own memory length. At the swap (``--t2r-decay-init``) every
feature of head h gets that head's decay (``near-one``: 1 - 2^-12, starting as additive T2R;
``retnet``: 1 - 2^(-5 - h)), learned unless ``--t2r-decay-fixed``. Its forms are the gated ones
with per-feature log-gates (``ops.causal_gated``, reference ``ops.causal_gated_reference``); a
padded position does not decay.
"""
import torch
from torch import nn

from ... import ops
from .base import RunningSums, logit, register_state_update
from .decay import DECAY_INITS, decay_parameter, initial_decays


@register_state_update("decay-feature")
class FeatureDecayState(RunningSums):
    order = 1.5
    options = ("decay_init", "decay_fixed")
    choices = {"decay_init": DECAY_INITS}

    def __init__(self, num_heads, head_dim, feature_dim, norm=None, decay_init="near-one", decay_fixed=False, **_):
        super().__init__(num_heads, head_dim, feature_dim, norm)
        g = initial_decays(decay_init, num_heads)[:, None].expand(num_heads, feature_dim)
        decay_parameter(self, logit(g).float().contiguous(), decay_fixed)  # (H, F)

    def token_inputs(self, x, k_proj, key_padding_mask):
        """log g (B, H, T, F): the decays at every position (fp32 for half x), 0 where padded."""
        T, B, _ = x.shape
        log_g = nn.functional.logsigmoid(self.decay_logit.to(ops.compute_dtype(x.dtype)))[None, :, None].expand(B, -1, T, -1)
        if key_padding_mask is None:
            return log_g
        return log_g.masked_fill(key_padding_mask[:, None, -T:, None].to(torch.bool), 0.0)
