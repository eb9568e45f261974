"""Which exact causal form training runs (``causal_parallel``; the state updates' ``gated_parallel``
and ``delta_parallel``): the policy, kept apart from the forms so that a new form changes this
file and not the others. All forms are exact, so the choice only trades speed and memory.

The backends: ours (PyTorch, always), fla (``FAIRSEQ_T2R_FLA=1``, CUDA, the optional ``fla``
package) and this project's Triton kernels (``FAIRSEQ_T2R_TRITON=1``, CUDA, the optional
``triton`` package, imported only then). Both switches are read from the environment once, here,
into ``USE_FLA`` / ``USE_TRITON``, which the policy reads at call time; tests and benchmarks set
them with ``set_backends`` (or the ``backends`` context manager), never by hand.
"""
import contextlib
import os
from typing import Callable, Optional

import torch
from torch import Tensor

from . import kernels
from .additive import fla
from .additive.chunked import causal_chunked
from .additive.quadratic import causal_quadratic
from .common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, State, autocast_off
from .delta import fla as delta_fla
from .delta.chunked import delta_chunked
from .delta.step import DEFAULT_NORM_EPS
from .gated import fla as gated_fla
from .gated.chunked import causal_gated

# Up to this length the quadratic form is faster than the chunked one (fwd + bwd, 8 heads,
# k = 32, d = 64 on CPU: 1.6x faster at 64, even at 128, 2.4x slower at 256; measured by
# benchmarks/training.py --parts tune).
QUADRATIC_MAX_LEN = 128
# Opt-in (FAIRSEQ_T2R_FLA=1): flash-linear-attention's kernels on CUDA (see additive/fla.py for
# why it is off by default). Read at call time.
USE_FLA = os.environ.get("FAIRSEQ_T2R_FLA", "0") == "1"
# Opt-in (FAIRSEQ_T2R_TRITON=1): this project's Triton kernels (additive/triton.py, imported only
# then) for long sequences on CUDA. Read at call time. Off by default.
USE_TRITON = os.environ.get("FAIRSEQ_T2R_TRITON", "0") == "1"
# the dtypes the Triton kernels take (tl.dot operands); float64 stays on the PyTorch forms
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def set_backends(fla: Optional[bool] = None, triton: Optional[bool] = None) -> dict:
    """Switch the optional backends on or off (None: leave as is), as FAIRSEQ_T2R_FLA /
    FAIRSEQ_T2R_TRITON would; returns the previous settings, {"fla": bool, "triton": bool}."""
    global USE_FLA, USE_TRITON
    before = {"fla": USE_FLA, "triton": USE_TRITON}
    if fla is not None:
        USE_FLA = bool(fla)
    if triton is not None:
        USE_TRITON = bool(triton)
    return before


@contextlib.contextmanager
def backends(fla: Optional[bool] = None, triton: Optional[bool] = None):
    """``set_backends`` for the duration of a block."""
    before = set_backends(fla, triton)
    try:
        yield
    finally:
        set_backends(**before)


def parallel_form(
    length: int,
    is_cuda: bool,
    weight_dropout: bool,
    quadratic_max_len: int = QUADRATIC_MAX_LEN,
    dtype: Optional[torch.dtype] = None,
) -> str:
    """Which exact form training runs: "quadratic", "triton", "fla" or "chunked". The one policy
    for both training entry points: ``causal_parallel`` and relu features' ``causal_relu_from_input``
    (which runs its own fused chunked form unless this says "triton"). ``dtype``: the inputs'
    dtype where the caller knows it (None: assumed one the Triton kernels take)."""
    if weight_dropout or length <= quadratic_max_len:
        return "quadratic"
    if is_cuda and USE_TRITON and (dtype is None or dtype in TRITON_DTYPES):
        return "triton"
    if is_cuda and USE_FLA and kernels.fla_kernel() is not None:
        return "fla"
    return "chunked"


@autocast_off
def causal_parallel(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    weight_dropout: Optional[Callable[[Tensor], Tensor]] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    quadratic_max_len: int = QUADRATIC_MAX_LEN,
) -> Tensor:
    """Training form: phi_q/phi_k (B, H, T, F), v (B, H, T, D) -> (B, H, T, D) in v's dtype, by
    the faster exact algorithm for the length.

    Dropout on attention weights needs the weights themselves, so it forces the quadratic form.
    On CUDA, long sequences go through this project's Triton kernels under ``FAIRSEQ_T2R_TRITON=1``,
    else flash-linear-attention's chunked kernel when the optional ``fla`` package is importable
    (``pip install .[gpu]``) and ``FAIRSEQ_T2R_FLA=1`` is set.
    """
    form = parallel_form(phi_q.size(-2), phi_q.is_cuda, weight_dropout is not None, quadratic_max_len, v.dtype)
    if form == "quadratic":
        return causal_quadratic(phi_q, phi_k, v, eps, weight_dropout)
    if form == "triton":
        from .additive.triton import causal_triton  # needs the optional triton package

        return causal_triton(phi_q, phi_k, v, eps, chunk_size)
    if form == "fla":
        return fla.causal_fla(phi_q, phi_k, v, eps)
    return causal_chunked(phi_q, phi_k, v, eps, chunk_size)


def state_form(length: int, is_cuda: bool, dtype: torch.dtype, kernel: str) -> str:
    """Which training form a state update runs: "fla" (``gated/fla.py`` or ``delta/fla.py``, fla's ``kernel``: see
    ``kernels._FLA_NAMES``) on CUDA under ``FAIRSEQ_T2R_FLA=1`` for fp32/fp16/bf16 inputs of at
    least one token when that kernel is importable, else "torch" (``causal_gated``, ``delta_chunked``)."""
    if (length > 0 and is_cuda and USE_FLA and dtype in TRITON_DTYPES
            and kernels.fla_state_kernel(kernel) is not None):
        return "fla"
    return "torch"


def gated_parallel(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor], *, eps: float = DEFAULT_EPS,
    initial_state: Optional[State] = None, return_state: bool = False, normalize: bool = True,
):
    """The gated (and decayed, and additive) state's training form, as ``causal_gated`` (same
    arguments and return, default chunk size), by ``state_form``'s choice."""
    form = state_form(phi_q.size(2), phi_q.is_cuda, v.dtype, gated_fla.gated_kernel_name(log_g))
    fn = gated_fla.causal_gated_fla if form == "fla" else causal_gated
    return fn(phi_q, phi_k, v, log_g, eps=eps, initial_state=initial_state, return_state=return_state,
              normalize=normalize)


def delta_parallel(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g: Optional[Tensor], beta: Tensor, *,
    eps: float = DEFAULT_NORM_EPS, initial_state: Optional[Tensor] = None, return_state: bool = False,
):
    """The (gated) delta rule's training form, as ``delta_chunked`` (same arguments and return,
    default chunk size), by ``state_form``'s choice."""
    form = state_form(phi_q.size(2), phi_q.is_cuda, v.dtype, "gated_delta_rule")
    fn = delta_fla.delta_fla if form == "fla" else delta_chunked
    return fn(phi_q, phi_k, v, log_g, beta, eps=eps, initial_state=initial_state, return_state=return_state)
