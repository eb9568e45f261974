"""Optional GPU glue: the state updates' training forms with flash-linear-attention's chunked
Triton kernels (the ``fla`` package, ``pip install .[gpu]``), same signatures and returns as the
forms they stand in for. Chosen by ``dispatch.state_form`` only (CUDA, ``FAIRSEQ_T2R_FLA=1``).

- ``causal_gated_fla`` for ``gate.causal_gated`` (hence the decay too, whose per-token log-gates
  are those of ``decay.decay_log_gates``): per-head log-gates (B, H, T) or none (g = 1) through
  fla's ``chunk_simple_gla(g=...)``; per-feature log-gates (B, H, T, F) through ``chunk_gla``.
  Both take per-token log-gates (not cumulative; they sum within chunks themselves) and give
  the gate's gradient (dg), so every state they serve trains as on our form.
- ``delta_fla`` for ``delta_chunked``: fla's ``chunk_gated_delta_rule`` (log-gate log g, or 0
  for the plain delta rule: g = 1 exactly). fla's ``chunk_delta_rule`` is not used: 0.6.0
  asserts its inputs are not fp32, and the glue always feeds fp32 (below).

Conventions kept ours: the layout is ours (B, H, T, *), moved to fla's (B, T, H, *); scale 1
(fla defaults to 1 / sqrt(K)); the delta rule's L2 norm is ours (``l2_normalize``, eps inside the
square root; fla's in-kernel norm adds eps to the squared norm), so ``use_qk_l2norm_in_kernel``
stays off. The sum normaliser is ours, in fp32: z decays with the same gates as S, so a column
of ones appended to v gives phi_q . z_i from the same kernel call (and z in the final state),
then max(den, eps) as ``causal_gated`` does. Precision: the inputs go to the kernels in
``compute_dtype`` (fp32 for half inputs), as our forms sum in fp32; fla's forward keeps
states between chunks in the input dtype, which for half inputs would break that rule. On a GPU,
fp32 ``tl.dot`` runs in TF32 unless ``TRITON_F32_DEFAULT=ieee``. Padding needs nothing here:
padded positions arrive with zero features and log-gate 0 (gate 1), as for our forms. ``chunk_size``
is accepted for the signature and ignored: fla picks its own (64).

Not yet run on a GPU: ``chunk_simple_gla``'s backward uses the same ``chunk_bwd_dqkwg`` kernel
that hit an illegal memory access on an H100 at K = 32 (``fla.py``); check with
``benchmarks/gpu_fla_states_check.py`` before relying on it.

``USE_FLA`` (``fla.py``'s switch) and ``_FLA_STATE_KERNELS`` are read at call time, so tests may
put stand-in kernels in the latter: {"simple_gla": fn, "gla": fn, "gated_delta_rule": fn}.
"""
from typing import Optional

import torch
from torch import Tensor

from .common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, State, autocast_off, compute_dtype
from .delta import DEFAULT_DELTA_CHUNK_SIZE, DEFAULT_NORM_EPS, check_delta_inputs, l2_normalize

_FLA_STATE_KERNELS = None  # None: not looked up yet; False: fla not importable; else name -> kernel
_FLA_NAMES = {  # our name -> (fla module, function)
    "simple_gla": ("fla.ops.simple_gla", "chunk_simple_gla"),
    "gla": ("fla.ops.gla", "chunk_gla"),
    "gated_delta_rule": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule"),
}


def fla_state_kernel(name: str):
    """fla's kernel for ``name`` (a key of ``_FLA_NAMES``), imported on first use, or None when
    fla (or that kernel) is not available."""
    global _FLA_STATE_KERNELS
    if _FLA_STATE_KERNELS is None:
        import importlib

        found = {}
        for ours, (module, fn) in _FLA_NAMES.items():
            try:
                found[ours] = getattr(importlib.import_module(module), fn)
            except Exception:  # not installed, too old, or no Triton: our forms serve
                pass
        _FLA_STATE_KERNELS = found or False
    return (_FLA_STATE_KERNELS or {}).get(name)


def gated_kernel_name(log_g: Optional[Tensor]) -> str:
    """The fla kernel that serves ``causal_gated`` for these log-gates."""
    return "gla" if log_g is not None and log_g.dim() == 4 else "simple_gla"


def _to_fla(x: Tensor, ct: torch.dtype) -> Tensor:
    """(B, H, T, *) -> (B, T, H, *) contiguous in ``ct``; (B, H, T) -> (B, T, H)."""
    return x.to(ct).transpose(1, 2).contiguous()


@autocast_off
def causal_gated_fla(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor],
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    initial_state: Optional[State] = None,
    return_state: bool = False,
    normalize: bool = True,
):
    """``causal_gated`` by fla: phi_q/phi_k (B, H, T, F), v (B, H, T, D), log_g (B, H, T) or
    (B, H, T, F) or None -> out (B, H, T, D) in v's dtype; with ``return_state`` (out,
    (S (B, H, F, D), z (B, H, F))). Needs ``fla_state_kernel(gated_kernel_name(log_g))``."""
    name = gated_kernel_name(log_g)
    kernel = fla_state_kernel(name)
    ct = compute_dtype(v.dtype)
    D = v.size(-1)
    q, k = _to_fla(phi_q, ct), _to_fla(phi_k, ct)
    v1 = torch.cat([v.to(ct), v.new_ones(v.shape[:-1] + (1,), dtype=ct)], -1)  # the last column gives z
    h0 = None
    if initial_state is not None:
        h0 = torch.cat([initial_state[0], initial_state[1].unsqueeze(-1)], -1).to(ct).contiguous()
    g = None if log_g is None else _to_fla(log_g, ct)
    num, final = kernel(q, k, _to_fla(v1, ct), g=g, scale=1.0, initial_state=h0, output_final_state=return_state)
    num = num.to(ct).transpose(1, 2)  # (B, H, T, D + 1)
    out = num[..., :D]
    if normalize:
        out = out / num[..., D:].clamp(min=eps)
    out = out.to(v.dtype)
    if not return_state:
        return out
    return out, (final[..., :D].contiguous(), final[..., D].contiguous())


@autocast_off
def delta_fla(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    beta: Tensor,
    gate: Optional[Tensor] = None,
    eps: float = DEFAULT_NORM_EPS,
    chunk_size: int = DEFAULT_DELTA_CHUNK_SIZE,
    initial_state: Optional[Tensor] = None,
    return_state: bool = False,
):
    """``delta_chunked`` by fla: phi_q/phi_k (B, H, T, F), v (B, H, T, D), beta (B, H, T),
    gate (B, H, T) in (0, 1] or None -> out (B, H, T, D) in v's dtype, unnormalised; with
    ``return_state`` (out, state (B, H, F, D)). Needs ``fla_state_kernel("gated_delta_rule")``."""
    check_delta_inputs(phi_q, phi_k, v, beta, gate)
    kernel = fla_state_kernel("gated_delta_rule")
    ct = compute_dtype(v.dtype)
    q = _to_fla(l2_normalize(phi_q.to(ct), eps), ct)
    k = _to_fla(l2_normalize(phi_k.to(ct), eps), ct)
    log_g = beta.new_zeros(beta.shape, dtype=ct) if gate is None else torch.log(gate.to(ct))
    h0 = None if initial_state is None else initial_state.to(ct).contiguous()
    out, final = kernel(
        q, k, _to_fla(v, ct), g=_to_fla(log_g, ct), beta=_to_fla(beta, ct), scale=1.0,
        initial_state=h0, output_final_state=return_state, use_qk_l2norm_in_kernel=False,
    )
    out = out.transpose(1, 2).to(v.dtype)
    return (out, final) if return_state else out
