"""The state-update interface (``--t2r-state``) and its registry, after ``feature_map_base.py``.

A state update says how causal self-attention's recurrent state takes in one token and how a
query reads it. One class per state, registered by name; it owns
- its options: the sub-options it reads (``options``, fields of ``config.SwapConfig`` without
  ``t2r_``; their values in ``choices``), the norms it accepts (``norms``: the first is implied
  when ``--t2r-norm`` is not given, a contradicting one is refused) and their checks (``check``);
- its new tensors (``<attn>.state_update.*``, which ``checkpoint.is_new_tensor`` accepts), made in
  ``__init__`` so that the swapped model starts close to additive T2R (the teacher's tensors are
  taken over untouched; a gate may read the teacher's key projection, ``k_proj``);
- its forms: ``token_inputs`` (the per-token tensors it derives from the layer input x: gates,
  write strengths), ``parallel`` (training, and a prompt continuing a state), ``update`` +
  ``read`` = ``step`` (one token at inference, in place), ``attention_weights`` (attention
  transfer);
- the layout of its incremental state: one batch-major tensor under ``state_key``, which beam
  reordering index-selects along dim 0 and ``.clone()`` copies; ``None`` before the first token.

Composition (e.g. a sliding window whose linear branch sees keys W tokens late): ``parallel``
takes phi_k, v, x and key_padding_mask already delayed (positions with no key marked padded: zero
features, neutral gates, the state left as is) while phi_q stays in place, and ``update`` takes
any token's (phi_k, v, inputs), e.g. the one leaving a window, before ``read`` with the current
query. Neither looks at the state's name; ``normalize=False`` returns phi(q) . S unnormalised
(append a ones column to v to get the sum normaliser's denominator beside it).
"""
import math
from typing import Dict, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from ... import ops
from ..registry import registrar

STATE_UPDATES: Dict[str, Type["StateUpdate"]] = {}  # name (--t2r-state) -> class
NORMS = ["sum", "rms"]
NEAR_ONE = 1.0 - 2.0 ** -12  # the near-one gates and decays at the swap: a half-life of ~2800 tokens
RMS_EPS = 1e-6


# class decorator: make a StateUpdate subclass available as ``--t2r-state name``
register_state_update = registrar(STATE_UPDATES, "state update")


def state_names():
    """The registered states, in their ``order`` (the config's choices, the demo's arms)."""
    return sorted(STATE_UPDATES, key=lambda n: (STATE_UPDATES[n].order, n))


def state_class(name: str) -> Type["StateUpdate"]:
    if name not in STATE_UPDATES:
        raise ValueError(f"--t2r-state {name}: choose the state from {state_names()} and the norm from {NORMS}")
    return STATE_UPDATES[name]


def option_choices(option: str):
    """The values of a sub-option (e.g. ``decay_init``), from the states that read it."""
    out = []
    for name in state_names():
        for value in STATE_UPDATES[name].choices.get(option, ()):
            if value not in out:
                out.append(value)
    return out


def option_names():
    """Every state option (``state``, ``norm``, then the sub-options the states read, once each)."""
    out = ["state", "norm"]
    for name in state_names():
        out += [o for o in STATE_UPDATES[name].options if o not in out]
    return tuple(out)


def build_state_update(num_heads: int, head_dim: int, feature_dim: int, state: str = "additive", **options):
    """The state update ``state`` with ``options`` (those it does not read are ignored)."""
    return state_class(str(state))(num_heads, head_dim, feature_dim, **options)


def logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


def constant_linear(in_features: int, out_features: int, bias: float) -> nn.Linear:
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
    """Base of every state update. Shapes: x (T, B, C) the layer input; phi_q, phi_k (B, H, T, F)
    (phi_k zero at padded keys); v (B, H, T, D); key_padding_mask (B, >= T), its last T columns."""

    name = ""
    order = 100.0  # where the state comes in lists (help, demo arms)
    norms: Tuple[str, ...] = ("sum", "rms")  # accepted --t2r-norm values; the first is implied
    options: Tuple[str, ...] = ()  # the sub-options it reads (config fields without ``t2r_``)
    choices: Dict[str, Tuple[str, ...]] = {}  # their values, where they are choices
    state_key = "Sz"  # the incremental state's key in the module's buffer
    # the demo's arm of this state: (label, more flags than --t2r-state NAME), or None for none
    arm: Optional[Tuple[str, Tuple[str, ...]]] = None
    # the benchmarks' extra --states spellings: name -> options beyond state (e.g. gate-feature)
    spellings: Dict[str, dict] = {}
    rms_eps = RMS_EPS  # the floor of the RMS norm

    def __init__(self, num_heads: int, head_dim: int, feature_dim: int, norm: Optional[str] = None, **options):
        super().__init__()
        norm = self.norms[0] if norm is None else str(norm)
        self.check(norm, head_dim, feature_dim, **options)
        self.norm = norm
        self.num_heads, self.head_dim, self.feature_dim = num_heads, head_dim, feature_dim
        if norm == "rms":
            self.norm_weight = nn.Parameter(torch.ones(num_heads, head_dim))

    @classmethod
    def check(cls, norm: str, head_dim: int, feature_dim: int, **options) -> None:
        """Raise ValueError (one line, naming the fix) for options that make no sense together."""
        if norm not in NORMS:
            raise ValueError(f"--t2r-state {cls.name} / --t2r-norm {norm}: choose the state from {state_names()} "
                             f"and the norm from {NORMS}")
        if norm not in cls.norms:
            raise ValueError(f"--t2r-state {cls.name} takes --t2r-norm {' or '.join(cls.norms)}, not {norm}: "
                             f"leave --t2r-norm out (it is then {cls.norms[0]}) or pass --t2r-norm {cls.norms[0]}")

    @property
    def state(self) -> str:
        return self.name

    @property
    def is_paper(self) -> bool:
        """T2R's plain running sums with the sum normaliser: the fused relu op and attention-weight
        dropout apply (only ``additive`` says so)."""
        return False

    @property
    def normalize(self) -> bool:
        """Whether the forms divide by the running key sum (else ``finish`` RMS-normalises)."""
        return self.norm == "sum"

    @property
    def weights_are_distributions(self) -> bool:
        """Whether ``attention_weights`` rows are distributions over the keys (attention transfer's
        cross-entropy needs them)."""
        return self.normalize

    # -- per-token inputs --------------------------------------------------------------------
    def token_inputs(self, x: Tensor, k_proj: nn.Module, key_padding_mask: Optional[Tensor]):
        """The per-token tensors the forms take besides phi and v (B, H, T, ...), neutral (the state
        left as is) at padded positions; None when the state has none."""
        return None

    # -- training, and several tokens continuing a state ---------------------------------------
    def parallel(self, phi_q: Tensor, phi_k: Tensor, v: Tensor, x: Tensor, k_proj: nn.Module,
                 key_padding_mask: Optional[Tensor], eps: float, initial_state: Optional[Tensor] = None,
                 return_state: bool = False, weight_dropout=None, normalize: Optional[bool] = None):
        """-> out (B, H, T, D) (finished: ``finish`` applied unless ``normalize=False``), and with
        ``return_state`` the state after the last token in this class's layout. ``initial_state``:
        the state (this layout) of the tokens before these. ``weight_dropout`` only where
        ``is_paper``."""
        inputs = self.token_inputs(x, k_proj, key_padding_mask)
        raw = normalize is False
        res = self.parallel_form(phi_q, phi_k, v, inputs, eps, initial_state, return_state,
                                 self.normalize and not raw, weight_dropout)
        out, state = res if return_state else (res, None)
        out = out if raw else self.finish(out)
        return (out, state) if return_state else out

    def parallel_form(self, phi_q, phi_k, v, inputs, eps, initial_state, return_state, normalize, weight_dropout):
        raise NotImplementedError

    # -- one token at inference (no autograd; the state updated in place) --------------------
    def step(self, phi_q: Tensor, phi_k: Tensor, v1: Tensor, inputs, state: Optional[Tensor], eps: float,
             out_dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """One token: phi_q (B, H, 1, F), phi_k (B, H, F) (zero if padding), v1 (B, H, 1, D + 1) =
        [v | 1], ``inputs`` = ``token_inputs`` of the token (B, H, 1, ...). -> (out (B, H, 1, D)
        finished, in ``out_dtype``, or a view with its elements in that order; the state)."""
        state = self.update(state, phi_k, v1, inputs)
        return self.finish(self.read(phi_q, state, eps, out_dtype)), state

    def update(self, state: Optional[Tensor], phi_k: Tensor, v1: Tensor, inputs) -> Tensor:
        raise NotImplementedError

    def read(self, phi_q: Tensor, state: Tensor, eps: float, out_dtype: torch.dtype,
             normalize: Optional[bool] = None) -> Tensor:
        raise NotImplementedError

    def read_sums(self, phi_q: Tensor, state: Tensor) -> Tuple[Tensor, Tensor]:
        """(phi(q).S (B, H, R, D), phi(q).z (B, H, R)) in the state's dtype: a sum-normalised state's
        numerator and denominator apart (a sliding window adds its own terms to both)."""
        raise NotImplementedError(f"--t2r-state {self.name} --t2r-norm {self.norm} keeps no sum normaliser")

    def finish(self, out: Tensor) -> Tensor:
        """The forms' output (B, H, T, D) -> the attention output per head: unchanged for ``sum``,
        for ``rms`` out / rms(out) * norm_weight per head (in fp32 for half inputs)."""
        if self.norm != "rms":
            return out
        y = out.to(ops.compute_dtype(out.dtype))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.rms_eps)
        return (y * self.norm_weight.to(y.dtype).unsqueeze(1)).to(out.dtype)

    # -- attention transfer ---------------------------------------------------------------------
    def attention_weights(self, phi_q: Tensor, phi_k: Tensor, x: Tensor, k_proj: nn.Module,
                          key_padding_mask: Optional[Tensor], eps: float) -> Tensor:
        """The (B, H, T, T) weights the outputs use: the parallel form applied to the identity as
        values (row i: query i's output over one-hot values), before ``finish``."""
        B, H, T, _ = phi_k.shape
        eye = torch.eye(T, dtype=ops.compute_dtype(phi_q.dtype), device=phi_q.device).expand(B, H, T, T)
        return self.parallel(phi_q, phi_k, eye, x, k_proj, key_padding_mask, eps,
                             normalize=None if self.normalize else False)


class RunningSums(StateUpdate):
    """States kept as [S | z] (B, H, F, D + 1) and scaled by a gate g (B, H, 1|F) before each token
    adds (additive: no gate): the additive, decayed and gated states. Subclasses give
    ``token_inputs`` = log-gates (B, H, T) per head or (B, H, T, F) per feature (0 where padded)."""

    state_key = "Sz"

    def log_gates(self, x: Tensor, k_proj: nn.Module, key_padding_mask: Optional[Tensor]) -> Optional[Tensor]:
        """x (T, B, C) -> log g (B, H, T) or (B, H, T, F), 0 at padded positions; None for no gate."""
        return self.token_inputs(x, k_proj, key_padding_mask)

    def parallel_form(self, phi_q, phi_k, v, log_g, eps, initial_state, return_state, normalize, weight_dropout):
        init = None if initial_state is None else ops.split_state(initial_state)
        if init is None and return_state:
            init = ops.empty_state(phi_k, v)
        res = ops.gated_parallel(phi_q, phi_k, v, log_g, eps=eps, initial_state=init, return_state=return_state,
                                 normalize=normalize)
        if not return_state:
            return res
        out, (S, z) = res
        return out, ops.join_state(S, z)

    def step(self, phi_q, phi_k, v1, log_g, state, eps, out_dtype):
        # update + read + finish written out: this runs once per layer and generated token, and
        # Python calls are what stands between a step and the projections-only floor
        state = self.update(state, phi_k, v1, log_g)
        B, H, F, D1 = state.shape
        q = phi_q.reshape(B * H, 1, F)
        if q.dtype != state.dtype:
            q = q.to(state.dtype)
        nd = torch.bmm(q, state.view(B * H, F, D1))
        out = nd[..., :-1] / nd[..., -1:].clamp_(min=eps) if self.norm == "sum" else nd[..., :-1]
        out = out if out.dtype == out_dtype else out.to(out_dtype)
        return (out if self.norm == "sum" else self.finish(out.view(B, H, 1, D1 - 1))), state

    def update(self, state, phi_k, v1, log_g):
        ct = ops.compute_dtype(v1.dtype) if state is None else state.dtype
        if phi_k.dtype != ct or v1.dtype != ct:
            phi_k, v1 = phi_k.to(ct), v1.to(ct)
        if state is None:
            return phi_k.unsqueeze(-1) * v1  # (B, H, F, D + 1)
        # in place: the state tensor is the module's own (made here, or by the index_select of
        # reorder_incremental_state), and no autograd is recording
        if log_g is not None:
            g = log_g.to(state.dtype).exp()  # (B, H, 1) or (B, H, 1, F)
            state.mul_(g.unsqueeze(-1) if g.dim() == 3 else g.transpose(-1, -2))
        return state.addcmul_(phi_k.unsqueeze(-1), v1)

    def read_sums(self, phi_q, state):
        B, H, F, D1 = state.shape
        nd = torch.bmm(phi_q.reshape(B * H, -1, F).to(state.dtype), state.view(B * H, F, D1)).view(B, H, -1, D1)
        return nd[..., :-1], nd[..., -1]

    def read(self, phi_q, state, eps, out_dtype, normalize=None):
        """phi_q (B, H, R, F) against [S | z] (B, H, F, D + 1) -> (B, H, R, D) = num / max(den, eps)
        (num alone without ``normalize``), in ``out_dtype``."""
        B, H, F, D1 = state.shape
        q = phi_q.reshape(B * H, -1, F)
        if q.dtype != state.dtype:
            q = q.to(state.dtype)
        nd = torch.bmm(q, state.view(B * H, F, D1))
        normalize = self.normalize if normalize is None else normalize
        out = nd[..., :-1] / nd[..., -1:].clamp_(min=eps) if normalize else nd[..., :-1]
        out = out.view(B, H, -1, D1 - 1)
        return out if out.dtype == out_dtype else out.to(out_dtype)


def gate_bias(tau: float) -> float:
    """The bias b with logsigmoid(b) / tau = log NEAR_ONE: a gate projection's near-one start."""
    return -math.log(math.expm1(-tau * math.log(NEAR_ONE)))
