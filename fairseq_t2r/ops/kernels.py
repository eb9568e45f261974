"""The optional GPU packages' kernels, looked up once, on first use (``pip install .[gpu]``):
fla's ``chunk_linear_attn`` (``fla_kernel``) and its state kernels (``fla_state_kernel``). Which
of them training runs is ``dispatch``'s choice; the glue that calls them is each algorithm's
``fla.py``. ``_FLA_KERNEL`` and ``_FLA_STATE_KERNELS`` are read at call time, so tests may put
stand-in kernels there: (fn, extra kwargs) and {"simple_gla": fn, "gla": fn, "gated_delta_rule": fn}.
"""
import importlib

from torch import Tensor

_FLA_KERNEL = None  # None: not looked up yet; False: not available
_FLA_STATE_KERNELS = None  # None: not looked up yet; False: fla not importable; else name -> kernel
_FLA_NAMES = {  # our name -> (fla module, function)
    "simple_gla": ("fla.ops.simple_gla", "chunk_simple_gla"),
    "gla": ("fla.ops.gla", "chunk_gla"),
    "gated_delta_rule": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule"),
}


def fla_kernel():
    """(fla's ``chunk_linear_attn``, extra keyword arguments) (imported on first use), or None
    when fla is not installed."""
    global _FLA_KERNEL
    if _FLA_KERNEL is None:
        try:
            import inspect

            from fla.ops.linear_attn import chunk_linear_attn  # the installed package

            extra = {}
            if "head_first" in inspect.signature(chunk_linear_attn).parameters:
                extra["head_first"] = False  # old releases defaulted to (B, H, T, K)
            _FLA_KERNEL = (chunk_linear_attn, extra)
        except Exception:  # not installed, or no Triton/CUDA: the PyTorch forms serve
            _FLA_KERNEL = False
    return _FLA_KERNEL or None


def fla_state_kernel(name: str):
    """fla's kernel for ``name`` (a key of ``_FLA_NAMES``), imported on first use, or None when
    fla (or that kernel) is not available."""
    global _FLA_STATE_KERNELS
    if _FLA_STATE_KERNELS is None:
        found = {}
        for ours, (module, fn) in _FLA_NAMES.items():
            try:
                found[ours] = getattr(importlib.import_module(module), fn)
            except Exception:  # not installed, too old, or no Triton: our forms serve
                pass
        _FLA_STATE_KERNELS = found or False
    return (_FLA_STATE_KERNELS or {}).get(name)


def to_fla(x: Tensor, ct) -> Tensor:
    """(B, H, T, *) -> fla's (B, T, H, *) contiguous in ``ct``; (B, H, T) -> (B, T, H)."""
    return x.to(ct).transpose(1, 2).contiguous()
