"""Optional GPU glue: the causal form with flash-linear-attention's Triton kernel (the ``fla``
package, ``pip install .[gpu]``) for the numerator and our normaliser.

Opt-in (``FAIRSEQ_T2R_FLA=1``, read by ``dispatch``): on an H100 with fla 0.6.0 / Triton 3.6 / torch 2.11, fla's backward
kernel (chunk_bwd_kernel_dqkwg) hit an illegal memory access, and its fp32 matmuls run in TF32
(parallel vs recurrent differ by ~3e-3 instead of ~1e-6): see benchmarks/gpu_check.py.
The kernel is looked up by ``kernels.fla_kernel``.
"""
from torch import Tensor

from ..common import DEFAULT_EPS, autocast_off, compute_dtype
from ..kernels import fla_kernel


@autocast_off
def causal_fla(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """phi_q/phi_k (B, H, T, F), v (B, H, T, D) -> (B, H, T, D) in v's dtype: fla's kernel for the
    numerator phi_q . S_i (unnormalised, scale 1: ``normalize=False``; fla's own normaliser adds
    1e-10 instead of clamping at eps); the denominator max(phi_q . z_i, eps) is ours, in fp32 as
    everywhere else. Needs ``fla_kernel()`` to be available."""
    kernel, extra = fla_kernel()
    q, k, vv = (t.transpose(1, 2).contiguous() for t in (phi_q, phi_k, v))  # (B, T, H, X)
    num, _ = kernel(q, k, vv, scale=1.0, normalize=False, **extra)
    ct = compute_dtype(v.dtype)
    den = (q.to(ct) * k.to(ct).cumsum(1)).sum(-1, keepdim=True)
    out = (num.to(ct) / den.clamp(min=eps)).to(v.dtype)
    return out.transpose(1, 2)
