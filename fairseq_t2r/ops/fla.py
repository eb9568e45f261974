"""Optional GPU glue: the causal form with flash-linear-attention's Triton kernel (the ``fla``
package, ``pip install .[gpu]``) for the numerator and our normaliser.

Opt-in (FAIRSEQ_T2R_FLA=1): on an H100 with fla 0.6.0 / Triton 3.6 / torch 2.11, fla's backward
kernel (chunk_bwd_kernel_dqkwg) hit an illegal memory access, and its fp32 matmuls run in TF32
(parallel vs recurrent differ by ~3e-3 instead of ~1e-6): see benchmarks/gpu_check.py.
``USE_FLA`` and ``_FLA_KERNEL`` are read at call time, so tests and benchmarks may set them on
this module.
"""
import os

from torch import Tensor

from .common import DEFAULT_EPS, autocast_off, compute_dtype

USE_FLA = os.environ.get("FAIRSEQ_T2R_FLA", "0") == "1"
_FLA_KERNEL = None  # None: not looked up yet; False: not available


def fla_kernel():
    """(fla's ``chunk_linear_attn``, extra keyword arguments) (imported on first use), or None
    when fla is not installed."""
    global _FLA_KERNEL
    if _FLA_KERNEL is None:
        try:
            import inspect

            from fla.ops.linear_attn import chunk_linear_attn  # the installed package, not this file

            extra = {}
            if "head_first" in inspect.signature(chunk_linear_attn).parameters:
                extra["head_first"] = False  # old releases defaulted to (B, H, T, K)
            _FLA_KERNEL = (chunk_linear_attn, extra)
        except Exception:  # not installed, or no Triton/CUDA: the PyTorch forms serve
            _FLA_KERNEL = False
    return _FLA_KERNEL or None


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
