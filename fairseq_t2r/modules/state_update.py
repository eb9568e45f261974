"""How a converted causal self-attention updates its state (``--t2r-state``) and normalises its
output (``--t2r-norm``): the new tensors of the non-additive states and the per-token gates.

    additive (T2R):  S_i = S_{i-1} + phi(k_i) v_i^T
    decay:           S_i = g_h S_{i-1} + phi(k_i) v_i^T      g_h = sigmoid(decay_logit_h), per head
    gate:            S_i = diag(g_i) S_{i-1} + phi(k_i) v_i^T g_i = sigmoid(W_g x_i + b_g)^(1/tau)
    delta:           S_i = (I - beta_i k_i k_i^T) S_{i-1} + beta_i k_i v_i^T, beta_i = sigmoid(W_b x_i + b_b)
    gated-delta:     S_i = g_i (I - beta_i k_i k_i^T) S_{i-1} + beta_i k_i v_i^T, g_i as ``gate``, per head
(delta rules: k_i, q_i are phi(k_i), phi(q_i) L2-normalised inside ``ops.delta_*``; no z.)
z follows S with the same gate; ``sum`` divides by max(phi(q) . z, eps) (T2R), ``rms`` instead
RMS-normalises each head's phi(q) . S (RetNet / SUPRA / fla), times a learned weight per channel;
the delta rules only have ``rms``.

Initialisation (so that the swapped model starts as close to additive T2R as each allows):
- decay ``near-one``: g_h = 1 - 2^-12 for every head (a half-life of ~2800 tokens), learned;
  ``retnet``: RetNet's g_h = 1 - 2^(-5 - h) (fixed with --t2r-decay-fixed: RetNet / SUPRA).
- gate ``projection``: a new Linear (C -> H or H * F) with zero weight and the bias that gives
  g = 1 - 2^-12: at the swap the gate is the near-one decay, then it learns to depend on x.
  ``key`` (Liger): no new tensor, the gate's logits are each head's key projection averaged over
  head_dim / G channels (G = 1 or F), so it depends on x from the start.
- delta / gated-delta: beta from a new Linear (C -> H) with zero weight and the bias that gives
  beta = 2^-8 (``BETA_INIT``) for every token. A small beta makes the rule nearly additive at the
  swap (S ~ beta sum_j k_j v_j^T: additive T2R with L2-normalised features, whose scale the RMS
  norm removes; the erase term is second order in beta), and lets it learn where to overwrite
  (through the sigmoid, in log space: the RMS norm makes the output insensitive to beta's scale
  alone). DeltaNet's init (random weight, beta ~ 0.5 from the start) would replace the pretrained
  model's long-range sums by a recency-weighted memory at the swap. Measured on a random layer
  (C 64, 4 heads, F 32, 512 tokens, float64): RMS-normalised outputs differ from that additive
  limit by 0.4% (positions < 16), 2.6% (16-128), 8.7% (128-512) at 2^-8; 3%, 20%, 55% at 2^-5.
  The outputs are beta-sized at the swap, so the RMS norm's floor is scaled by BETA_INIT^2.
  gated-delta's gate is the ``gate`` one (its source and temperature options, near-one at the
  swap), one per head.
- rms: weight 1.

Attention-weight dropout (--attention-dropout) needs the (T, T) weights, which only the paper's
quadratic form builds: self-attention with another state trains without it.

The new tensors live in this module (``<attn>.state_update.*``: ``decay_logit``, ``gate_proj``,
``beta_proj``, ``norm_weight``), which ``checkpoint.is_new_tensor`` recognises; the additive state with the sum
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
DELTA_STATES = ("delta", "gated-delta")
GATED_STATES = ("gate", "gated-delta")  # a data-dependent gate g_i (gate_proj or the key projection)
NEAR_ONE = 1.0 - 2.0 ** -12
BETA_INIT = 2.0 ** -8
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
    if state in DELTA_STATES and norm == "sum":
        raise ValueError(f"--t2r-state {state} has no sum normaliser (the delta rule overwrites values, a "
                         f"running key sum would not track them): pass --t2r-norm rms")
    if state == "gated-delta" and gate_shape == "feature":
        raise ValueError("--t2r-state gated-delta has one gate per head (the delta rule scales the whole state): "
                         "use --t2r-gate-shape head, or --t2r-state gate for per-feature gates")
    if state in GATED_STATES and gate_temperature <= 0:
        raise ValueError(f"--t2r-gate-temperature {gate_temperature} must be positive (GLA uses 16)")
    if state == "gate" and gate_source == "key" and gate_shape == "feature" and head_dim % feature_dim:
        raise ValueError(f"--t2r-gate-source key with --t2r-gate-shape feature pools each head's key (head_dim "
                         f"{head_dim}) into {feature_dim} features, which needs head_dim divisible by the feature "
                         f"size: use --t2r-gate-shape head or --t2r-gate-source projection")


def _constant_linear(in_features: int, out_features: int, bias: float) -> nn.Linear:
    """A Linear with zero weight and a constant bias: the same output for every x at the swap."""
    # its random init is overwritten: keep the random stream, so that a swap with the same seed
    # draws the same feature maps whatever the state update
    with torch.random.fork_rng(devices=[]):
        linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(bias)
    return linear


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
        if state in GATED_STATES and self.gate_source == "projection":
            # logsigmoid(b) / tau = log NEAR_ONE  <=>  b = -log(expm1(-tau log NEAR_ONE))
            self.gate_proj = _constant_linear(num_heads * head_dim, num_heads * self.groups,
                                              -math.log(math.expm1(-self.tau * math.log(NEAR_ONE))))
        if state in DELTA_STATES:  # beta = sigmoid(b) = BETA_INIT at the swap (see the module docstring)
            self.beta_proj = _constant_linear(num_heads * head_dim, num_heads, math.log(BETA_INIT / (1 - BETA_INIT)))
        # the floor of the RMS norm: a delta rule's outputs scale with beta, small at the swap
        self.rms_eps = RMS_EPS * BETA_INIT ** 2 if state in DELTA_STATES else RMS_EPS
        if norm == "rms":
            self.norm_weight = nn.Parameter(torch.ones(num_heads, head_dim))

    @property
    def is_paper(self) -> bool:
        """The additive state with T2R's sum normaliser: the attention's own additive forms run."""
        return self.state == "additive" and self.norm == "sum"

    @property
    def is_delta(self) -> bool:
        """A delta rule: state S alone (B, H, F, D), trained by ``ops.delta_chunked``."""
        return self.state in DELTA_STATES

    @property
    def normalize(self) -> bool:
        """Whether the ops divide by the running sum (else ``finish`` RMS-normalises)."""
        return self.norm == "sum"

    def log_gates(self, x: Tensor, k_proj: nn.Module, key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
        """x (T, B, C) -> log g (B, H, T) or (B, H, T, F), 0 at padded positions (key_padding_mask
        (B, >= T), its last T columns); None for the additive state."""
        if self.state in ("additive", "delta"):
            return None
        T, B, _ = x.shape
        if self.state == "decay":
            log_decay = nn.functional.logsigmoid(self.decay_logit.float())
            return ops.decay_log_gates(log_decay, B, T, key_padding_mask)
        # fp32 for half inputs; float64 stays float64 (rounding to fp32 would differ between forms)
        logits = nn.functional.linear(x, *self._gate_linear(k_proj)).to(ops.compute_dtype(x.dtype))  # (T, B, H * G)
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
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.rms_eps)
        return (y * self.norm_weight.to(y.dtype).unsqueeze(1)).to(out.dtype)

    def parallel(self, phi_q: Tensor, phi_k: Tensor, v: Tensor, x: Tensor, k_proj: nn.Module,
                 key_padding_mask: Optional[Tensor], eps: float, initial_state=None, return_state=False):
        """The training (parallel) form: phi_q/phi_k (B, H, T, F), v (B, H, T, D), x (T, B, C) ->
        (B, H, T, D) (and the final state with ``return_state``)."""
        if self.is_delta:
            beta, gate = self.delta_gates(x, k_proj, key_padding_mask)
            res = ops.delta_parallel(phi_q, phi_k, v, beta, gate, eps=ops.DEFAULT_NORM_EPS,
                                     initial_state=initial_state, return_state=return_state)
        else:
            res = ops.gated_parallel(phi_q, phi_k, v, self.log_gates(x, k_proj, key_padding_mask), eps,
                                     initial_state=initial_state, return_state=return_state, normalize=self.normalize)
        out, state = res if return_state else (res, None)
        out = self.finish(out)
        return (out, state) if return_state else out

    def delta_gates(self, x: Tensor, k_proj: nn.Module, key_padding_mask: Optional[Tensor]):
        """x (T, B, C) -> the delta rule's beta (B, H, T) and gate (B, H, T) (None for ``delta``),
        in ``compute_dtype`` (fp32 for half x), the gate 1 at padded positions (beta there does not matter: their features are 0)."""
        logits = nn.functional.linear(x, self.beta_proj.weight, self.beta_proj.bias)
        beta = torch.sigmoid(logits.to(ops.compute_dtype(x.dtype)))
        log_g = self.log_gates(x, k_proj, key_padding_mask)  # already 0 (g = 1) at padded positions
        return beta.permute(1, 2, 0), None if log_g is None else log_g.exp()
