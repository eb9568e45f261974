"""Optional GPU glue: the gated states' training form (``chunked.causal_gated``, hence the decay
too, whose per-token log-gates are ``decay.decay_log_gates``'s) with flash-linear-attention's
chunked Triton kernels, same signature and return. Chosen by ``dispatch.state_form`` only (CUDA,
``FAIRSEQ_T2R_FLA=1``): per-head log-gates (B, H, T) or none (g = 1) through fla's
``chunk_simple_gla(g=...)``; per-feature log-gates (B, H, T, F) through ``chunk_gla``. Both take
per-token log-gates (not cumulative; they sum within chunks themselves) and give the gate's
gradient (dg), so every state they serve trains as on our form.

Conventions kept ours: the layout is ours (B, H, T, *), moved to fla's (B, T, H, *); scale 1
(fla defaults to 1 / sqrt(K)). The sum normaliser is ours, in fp32: z decays with the same gates
as S, so a column of ones appended to v gives phi_q . z_i from the same kernel call (and z in the
final state), then max(den, eps) as ``causal_gated`` does. Precision: the inputs go to the
kernels in ``compute_dtype`` (fp32 for half inputs), as our forms sum in fp32; fla's forward
keeps states between chunks in the input dtype, which for half inputs would break that rule. On
a GPU, fp32 ``tl.dot`` runs in TF32 unless ``TRITON_F32_DEFAULT=ieee``. Padding needs nothing
here: padded positions arrive with zero features and log-gate 0 (gate 1), as for our forms.
``chunk_size`` is accepted for the signature and ignored: fla picks its own (64).

Not yet run on a GPU: ``chunk_simple_gla``'s backward uses the same ``chunk_bwd_dqkwg`` kernel
that hit an illegal memory access on an H100 at K = 32 (``additive/fla.py``); check with
``benchmarks/gpu_fla_states_check.py`` before relying on it. The kernels are looked up by
``kernels.fla_state_kernel``.
"""
from typing import Optional

import torch
from torch import Tensor

from ..common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, State, autocast_off, compute_dtype
from ..kernels import fla_state_kernel, to_fla


def gated_kernel_name(log_g: Optional[Tensor]) -> str:
    """The fla kernel that serves ``causal_gated`` for these log-gates."""
    return "gla" if log_g is not None and log_g.dim() == 4 else "simple_gla"


@autocast_off
def causal_gated_fla(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor],
    *,
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
    q, k = to_fla(phi_q, ct), to_fla(phi_k, ct)
    v1 = torch.cat([v.to(ct), v.new_ones(v.shape[:-1] + (1,), dtype=ct)], -1)  # the last column gives z
    h0 = None
    if initial_state is not None:
        h0 = torch.cat([initial_state[0], initial_state[1].unsqueeze(-1)], -1).to(ct).contiguous()
    g = None if log_g is None else to_fla(log_g, ct)
    num, final = kernel(q, k, to_fla(v1, ct), g=g, scale=1.0, initial_state=h0, output_final_state=return_state)
    num = num.to(ct).transpose(1, 2)  # (B, H, T, D + 1)
    out = num[..., :D]
    if normalize:
        out = out / num[..., D:].clamp(min=eps)
    out = out.to(v.dtype)
    if not return_state:
        return out
    return out, (final[..., :D].contiguous(), final[..., D].contiguous())
