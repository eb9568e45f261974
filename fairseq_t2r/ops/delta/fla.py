"""Optional GPU glue: the (gated) delta rule's training form (``chunked.delta_chunked``) with
fla's ``chunk_gated_delta_rule`` (its log-gate is ours as given, or 0 for the plain delta rule:
g = 1 exactly), same signature and return. Chosen by ``dispatch.state_form`` only (CUDA, ``FAIRSEQ_T2R_FLA=1``).
fla's ``chunk_delta_rule`` is not used: 0.6.0 asserts its inputs are not fp32, and the glue
always feeds fp32 (``compute_dtype``: fla keeps chunk states in the input dtype).

Conventions kept ours: the layout (B, H, T, *), moved to fla's (B, T, H, *); scale 1; the L2
norm (``step.l2_normalize``, eps inside the square root; fla's in-kernel norm adds eps to the
squared norm), so ``use_qk_l2norm_in_kernel`` stays off. Padded positions arrive with zero
features and log-gate 0. The kernel is looked up by ``kernels.fla_state_kernel``.
"""
from typing import Optional

from torch import Tensor

from ..common import autocast_off, compute_dtype
from ..kernels import fla_state_kernel, to_fla
from .step import DEFAULT_DELTA_CHUNK_SIZE, DEFAULT_NORM_EPS, check_delta_inputs, l2_normalize


@autocast_off
def delta_fla(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    log_g: Optional[Tensor],
    beta: Tensor,
    *,
    eps: float = DEFAULT_NORM_EPS,
    chunk_size: int = DEFAULT_DELTA_CHUNK_SIZE,
    initial_state: Optional[Tensor] = None,
    return_state: bool = False,
):
    """``delta_chunked`` by fla: phi_q/phi_k (B, H, T, F), v (B, H, T, D), log_g (B, H, T) (<= 0)
    or None, beta (B, H, T) -> out (B, H, T, D) in v's dtype, unnormalised; with
    ``return_state`` (out, state (B, H, F, D)). Needs ``fla_state_kernel("gated_delta_rule")``."""
    check_delta_inputs(phi_q, phi_k, v, log_g, beta)
    kernel = fla_state_kernel("gated_delta_rule")
    ct = compute_dtype(v.dtype)
    q = to_fla(l2_normalize(phi_q.to(ct), eps), ct)
    k = to_fla(l2_normalize(phi_k.to(ct), eps), ct)
    log_g = beta.new_zeros(beta.shape, dtype=ct) if log_g is None else log_g
    h0 = None if initial_state is None else initial_state.to(ct).contiguous()
    out, final = kernel(
        q, k, to_fla(v, ct), g=to_fla(log_g, ct), beta=to_fla(beta, ct), scale=1.0,
        initial_state=h0, output_final_state=return_state, use_qk_l2norm_in_kernel=False,
    )
    out = out.transpose(1, 2).to(v.dtype)
    return (out, final) if return_state else out
