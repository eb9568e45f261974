"""A data-dependent forget gate (GLA; Mamba-2 style when scalar): S_i = diag(g_i) S_{i-1} +
phi(k_i) v_i^T, z likewise, g_i = sigmoid(W_g x_i + b_g)^(1/tau), one gate per head or per feature
(``--t2r-gate-shape``), tau = ``--t2r-gate-temperature``.

``--t2r-gate-source``: ``projection``, a new Linear (C -> H or H * F) with zero weight and the bias
that gives g = 1 - 2^-12 (at the swap the gate is the near-one decay, then it learns to depend on
x); ``key`` (Liger): no new tensor, the gate's logits are each head's key projection averaged over
head_dim / G channels (G = 1 or F), so it depends on x from the start. ``ForgetGate`` is shared
with the gated delta rule (``delta.py``).
"""
from typing import Optional

import torch
from torch import Tensor, nn

from ... import ops
from ..folding import weights_stamp
from .base import RunningSums, constant_linear, gate_bias, register_state_update

GATE_SOURCES = ("projection", "key")
GATE_SHAPES = ("head", "feature")
GATE_OPTIONS = ("gate_source", "gate_shape", "gate_temperature")


def check_gate(name: str, head_dim: int, feature_dim: int, gate_source="projection", gate_shape="head",
               gate_temperature=16.0) -> None:
    if float(gate_temperature) <= 0:
        raise ValueError(f"--t2r-gate-temperature {gate_temperature} must be positive (GLA uses 16)")
    if str(gate_source) == "key" and str(gate_shape) == "feature" and head_dim % feature_dim:
        raise ValueError(f"--t2r-gate-source key with --t2r-gate-shape feature pools each head's key (head_dim "
                         f"{head_dim}) into {feature_dim} features, which needs head_dim divisible by the feature "
                         f"size: use --t2r-gate-shape head or --t2r-gate-source projection")


class ForgetGate:
    """Mixin of the gated states: the gate's options, its tensor (``gate_proj``, for the
    projection source) and its log-gates."""

    options = GATE_OPTIONS
    choices = {"gate_source": GATE_SOURCES, "gate_shape": GATE_SHAPES}

    def __init__(self, num_heads, head_dim, feature_dim, norm=None, gate_source="projection", gate_shape="head",
                 gate_temperature=16.0, **_):
        super().__init__(num_heads, head_dim, feature_dim, norm, gate_source=gate_source, gate_shape=gate_shape,
                         gate_temperature=gate_temperature)
        self.gate_source, self.tau = str(gate_source), float(gate_temperature)
        self.groups = self.feature_dim if str(gate_shape) == "feature" else 1  # gates per head
        if self.gate_source == "projection":
            self.gate_proj = constant_linear(self.num_heads * self.head_dim, self.num_heads * self.groups,
                                             gate_bias(self.tau))

    @classmethod
    def check(cls, norm, head_dim, feature_dim, **options):
        super().check(norm, head_dim, feature_dim)
        check_gate(cls.name, head_dim, feature_dim, **options)

    def log_gates(self, x: Tensor, k_proj: nn.Module, key_padding_mask: Optional[Tensor]) -> Tensor:
        """x (T, B, C) -> log g (B, H, T) or (B, H, T, F), 0 at padded positions."""
        T, B, _ = x.shape
        # fp32 for half inputs; float64 stays float64 (rounding to fp32 would differ between forms)
        logits = nn.functional.linear(x, *self._gate_linear(k_proj)).to(ops.compute_dtype(x.dtype))  # (T, B, H * G)
        log_g = nn.functional.logsigmoid(logits).div(self.tau).view(T, B, self.num_heads, self.groups)
        log_g = log_g.permute(1, 2, 0, 3)  # (B, H, T, G)
        if key_padding_mask is not None:
            log_g = log_g.masked_fill(key_padding_mask[:, None, -T:, None].to(torch.bool), 0.0)
        return log_g.squeeze(-1) if self.groups == 1 else log_g

    def _gate_linear(self, k_proj: nn.Module):
        """(weight (H * G, C), bias) of the gate's logits: the new projection, or (Liger) the key
        projection averaged over each head's head_dim / G channels. The average is cached at
        inference (eval, no autograd) until a tensor of ``k_proj`` changes, as the folded maps are
        (``folding.py``): rebuilding it read the whole key projection at every decoding step; under
        autograd it is rebuilt at every call, so gradients reach ``k_proj``."""
        if self.gate_source == "projection":
            return self.gate_proj.weight, self.gate_proj.bias
        inference = not self.training and not torch.is_grad_enabled()
        if inference:
            stamp = weights_stamp(k_proj)
            cached = getattr(self, "_pooled_key", None)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        H, G = self.num_heads, self.groups
        w = k_proj.weight.view(H, G, self.head_dim // G, -1).mean(2).reshape(H * G, -1)
        b = None if k_proj.bias is None else k_proj.bias.view(H, G, -1).mean(2).reshape(-1)
        if inference:
            self._pooled_key = (stamp, (w, b))
        return w, b


@register_state_update("gate")
class GateState(ForgetGate, RunningSums):
    order = 2
    arm = ("T2R + forget gate from the key, swap + finetune", ("--t2r-gate-source", "key"))
    spellings = {"gate-feature": {"gate_shape": "feature"}}  # GLA's gate per feature

    def token_inputs(self, x, k_proj, key_padding_mask):
        return self.log_gates(x, k_proj, key_padding_mask)
