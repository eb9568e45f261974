"""How a converted causal self-attention updates its state (``--t2r-state``) and normalises its
output (``--t2r-norm``): the new tensors of the non-additive states and the per-token gates.

    additive (T2R):  S_i = S_{i-1} + phi(k_i) v_i^T
    decay:           S_i = g_h S_{i-1} + phi(k_i) v_i^T      g_h = sigmoid(decay_logit_h), per head
    gate:            S_i = diag(g_i) S_{i-1} + phi(k_i) v_i^T g_i = sigmoid(W_g x_i + b_g)^(1/tau)
z follows S with the same gate; ``sum`` divides by max(phi(q) . z, eps) (T2R), ``rms`` instead
RMS-normalises each head's phi(q) . S (RetNet / SUPRA / fla), times a learned weight per channel.

Initialisation (so that the swapped model starts as close to additive T2R as each allows):
- decay ``near-one``: g_h = 1 - 2^-12 for every head (a half-life of ~2800 tokens), learned;
  ``retnet``: RetNet's g_h = 1 - 2^(-5 - h) (fixed with --t2r-decay-fixed: RetNet / SUPRA).
- gate ``projection``: a new Linear (C -> H or H * F) with zero weight and the bias that gives
  g = 1 - 2^-12: at the swap the gate is the near-one decay, then it learns to depend on x.
  ``key`` (Liger): no new tensor, the gate's logits are each head's key projection averaged over
  head_dim / G channels (G = 1 or F), so it depends on x from the start.
- rms: weight 1.

Attention-weight dropout (--attention-dropout) needs the (T, T) weights, which only the paper's
quadratic form builds: self-attention with another state trains without it.

The new tensors live in this module (``<attn>.state_update.*``: ``decay_logit``, ``gate_proj``,
``norm_weight``), which ``checkpoint.is_new_tensor`` recognises; the additive state with the sum
normaliser has none, so the paper's models and checkpoints are unchanged.
"""
import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops

STATES = ["additive", "decay", "gate", "delta", "gated-delta"]
NORMS = ["sum", "rms"]
DECAY_INITS = ["near-one", "retnet"]
GATE_SOURCES = ["projection", "key"]
GATE_SHAPES = ["head", "feature"]
NEAR_ONE = 1.0 - 2.0 ** -12
RMS_EPS = 1e-6


def retnet_decays(num_heads: int) -> Tensor:
    """RetNet's per-head decays g_h = 1 - 2^(-5 - h), h = 0..H-1, in float64."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(num_heads, dtype=torch.float64))


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


def check_options(state: str, norm: str, gate_source: str, gate_shape: str, head_dim: int,
                  feature_dim: int, gate_temperature: float):
    """Raise ValueError (one line, naming the fix) for a combination that makes no sense."""
    if state not in STATES or norm not in NORMS:
        raise ValueError(f"--t2r-state {state} / --t2r-norm {norm}: choose the state from {STATES} and the norm from {NORMS}")
    if state in ("delta", "gated-delta"):
        if norm == "sum":
            raise ValueError(f"--t2r-state {state} has no sum normaliser (the delta rule overwrites values, a "
                             f"running key sum would not track them): pass --t2r-norm rms")
        raise ValueError(f"--t2r-state {state} is not wired into the attention module yet (its ops are in "
                         f"ops/delta.py): use --t2r-state additive, decay or gate")
    if state == "gate" and gate_temperature <= 0:
        raise ValueError(f"--t2r-gate-temperature {gate_temperature} must be positive (GLA uses 16)")
    if state == "gate" and gate_source == "key" and gate_shape == "feature" and head_dim % feature_dim:
        raise ValueError(f"--t2r-gate-source key with --t2r-gate-shape feature pools each head's key (head_dim "
                         f"{head_dim}) into {feature_dim} features, which needs head_dim divisible by the feature "
                         f"size: use --t2r-gate-shape head or --t2r-gate-source projection")


class StateUpdate(nn.Module):
    """The state update of one T2RAttention. Shapes: x (T, B, C) the layer input, log-gates
    (B, H, T) per head or (B, H, T, F) per feature (``log_gates``)."""

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int, state: str = "additive",
                 norm: str = "sum", decay_init: str = "near-one", decay_fixed: bool = False,
                 gate_source: str = "projection", gate_shape: str = "head", gate_temperature: float = 16.0):
        super().__init__()
        state, norm = str(state), str(norm)
        check_options(state, norm, str(gate_source), str(gate_shape), head_dim, feature_dim, gate_temperature)
        self.state, self.norm = state, norm
        self.num_heads, self.head_dim = num_heads, head_dim
        self.gate_source, self.tau = str(gate_source), float(gate_temperature)
        self.groups = feature_dim if str(gate_shape) == "feature" else 1  # gates per head
        if state == "decay":
            g = retnet_decays(num_heads) if str(decay_init) == "retnet" else torch.full((num_heads,), NEAR_ONE, dtype=torch.float64)
            logit = _logit(g).float()
            if decay_fixed:
                self.register_buffer("decay_logit", logit)
            else:
                self.decay_logit = nn.Parameter(logit)
        if state == "gate" and self.gate_source == "projection":
            embed_dim = num_heads * head_dim
            # its init is overwritten below: keep the random stream, so that a swap with the same seed
            # draws the same feature maps whatever the state update
            with torch.random.fork_rng(devices=[]):
                self.gate_proj = nn.Linear(embed_dim, num_heads * self.groups)
            # logsigmoid(b) / tau = log NEAR_ONE  <=>  b = -log(expm1(-tau log NEAR_ONE))
            bias = -math.log(math.expm1(-self.tau * math.log(NEAR_ONE)))
            with torch.no_grad():
                self.gate_proj.weight.zero_()
                self.gate_proj.bias.fill_(bias)
        if norm == "rms":
            self.norm_weight = nn.Parameter(torch.ones(num_heads, head_dim))

    @property
    def is_paper(self) -> bool:
        """The additive state with T2R's sum normaliser: the attention's own additive forms run."""
        return self.state == "additive" and self.norm == "sum"

    @property
    def normalize(self) -> bool:
        """Whether the ops divide by the running sum (else ``finish`` RMS-normalises)."""
        return self.norm == "sum"

    def log_gates(self, x: Tensor, k_proj: nn.Module, key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
        """x (T, B, C) -> log g (B, H, T) or (B, H, T, F), 0 at padded positions (key_padding_mask
        (B, >= T), its last T columns); None for the additive state."""
        if self.state == "additive":
            return None
        T, B, _ = x.shape
        if self.state == "decay":
            log_decay = nn.functional.logsigmoid(self.decay_logit.float())
            return ops.decay_log_gates(log_decay, B, T, key_padding_mask)
        logits = nn.functional.linear(x, *self._gate_linear(k_proj)).float()  # (T, B, H * G)
        log_g = nn.functional.logsigmoid(logits).div(self.tau).view(T, B, self.num_heads, self.groups)
        log_g = log_g.permute(1, 2, 0, 3)  # (B, H, T, G)
        if key_padding_mask is not None:
            log_g = log_g.masked_fill(key_padding_mask[:, None, -T:, None].to(torch.bool), 0.0)
        return log_g.squeeze(-1) if self.groups == 1 else log_g

    def _gate_linear(self, k_proj: nn.Module):
        """(weight (H * G, C), bias) of the gate's logits: the new projection, or (Liger) the key
        projection averaged over each head's head_dim / G channels."""
        if self.gate_source == "projection":
            return self.gate_proj.weight, self.gate_proj.bias
        H, G = self.num_heads, self.groups
        w = k_proj.weight.view(H, G, self.head_dim // G, -1).mean(2).reshape(H * G, -1)
        b = None if k_proj.bias is None else k_proj.bias.view(H, G, -1).mean(2).reshape(-1)
        return w, b

    def finish(self, out: Tensor) -> Tensor:
        """The ops' output (B, H, T, D) -> the attention output per head: unchanged for ``sum``,
        for ``rms`` out / rms(out) * norm_weight per head (in fp32 for half inputs)."""
        if self.norm != "rms":
            return out
        y = out.to(ops.compute_dtype(out.dtype))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + RMS_EPS)
        return (y * self.norm_weight.to(y.dtype).unsqueeze(1)).to(out.dtype)

    def parallel(self, phi_q: Tensor, phi_k: Tensor, v: Tensor, x: Tensor, k_proj: nn.Module,
                 key_padding_mask: Optional[Tensor], eps: float, initial_state=None, return_state=False):
        """The training (parallel) form: phi_q/phi_k (B, H, T, F), v (B, H, T, D), x (T, B, C) ->
        (B, H, T, D) (and the final state with ``return_state``)."""
        log_g = self.log_gates(x, k_proj, key_padding_mask)
        res = ops.causal_gated(phi_q, phi_k, v, log_g, eps, initial_state=initial_state,
                               return_state=return_state, normalize=self.normalize)
        out, state = res if return_state else (res, None)
        out = self.finish(out)
        return (out, state) if return_state else out
