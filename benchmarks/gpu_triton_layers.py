"""What benchmarks/gpu_triton_check.py runs: one attention layer in each form it times and counts
(the fused Triton kernels, T2R's relu training form as dispatch routes it, softmax through SDPA),
the attention alone, and a T2RAttention as fairseq calls it, all at one size (DIM, HEADS, k = F,
head dim D), on ``gpu_common.DEVICE``."""
import contextlib

import torch

from benchmarks import gpu_common

DIM, HEADS, F, D = 512, 8, 32, 64


def layers(ops, tlin, dtype):
    """name -> fn(x (B, T, DIM)) -> (B, T, DIM): one attention layer each, same sizes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import linear, scaled_dot_product_attention

    dev = gpu_common.DEVICE
    mk = lambda o, i: (torch.randn(o, i, device=dev, dtype=dtype) / i**0.5).requires_grad_()  # noqa: E731
    w_sm, w_t2r, w_out = mk(3 * DIM, DIM), mk(HEADS * (2 * F + D), DIM), mk(DIM, DIM)
    backend = SDPBackend.FLASH_ATTENTION if dev == "cuda" else SDPBackend.MATH

    def softmax(x, core=False):
        B, T, _ = x.shape
        q, k, v = linear(x, w_sm).view(B, T, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        with sdpa_kernel(backend):
            o = scaled_dot_product_attention(q, k, v, is_causal=True)
        return linear(o.transpose(1, 2).reshape(B, T, DIM), w_out)

    def triton(x):
        B, T, _ = x.shape
        y = linear(x, w_t2r).view(B, T, HEADS, 2 * F + D).transpose(1, 2)  # (B, H, T, 2F + D)
        o = tlin.causal_triton(y[..., :F], y[..., F : 2 * F], y[..., 2 * F :], relu=True)
        return linear(o.transpose(1, 2).reshape(B, T, HEADS * D), w_out)

    def relu_layer(x, flag):  # T2RAttention's training form for relu features, as dispatch routes it
        with triton_flag(flag):
            o = ops.causal_relu_from_input(x.transpose(0, 1), w_t2r, None, HEADS, F)
        return linear(o.transpose(0, 1), w_out)

    return {"triton": triton, "chunked": lambda x: relu_layer(x, False), "relu_triton_env": lambda x: relu_layer(x, True),
            "softmax": softmax}


@contextlib.contextmanager
def triton_flag(on):
    """FAIRSEQ_T2R_TRITON=1 (on) or unset, as dispatch reads it at call time (``ops.backends``)."""
    from fairseq_t2r.ops import dispatch

    with dispatch.backends(triton=on):
        yield


def t2r_module(dtype):
    """A T2RAttention (t2r map, DIM, HEADS, k = F) converted from fairseq's MultiheadAttention,
    in training mode, and fn(x (B, T, DIM), flag) -> (B, T, DIM) calling it as fairseq's decoder
    does; (None, None) where fairseq is not installed (the device image has none: carry it)."""
    try:
        import fairseq.modules  # noqa: F401
    except ImportError as e:
        print(f"T2RAttention parts skipped: fairseq not importable ({e})", flush=True)
        return None, None
    m = gpu_common.t2r_attention(DIM, HEADS, F).to(gpu_common.DEVICE, dtype).train()

    def run(x, flag):
        xt = x.transpose(0, 1)  # (T, B, DIM)
        with triton_flag(flag):
            out, _ = m(xt, xt, xt, need_weights=False)
        return out.transpose(0, 1)

    return m, run


def cores(tlin, dtype, T):
    """Attention alone, fwd+bwd inputs: triton (relu on load) and SDPA flash, (1, 8, T, X)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    dev = gpu_common.DEVICE
    mk = lambda X: torch.randn(1, HEADS, T, X, device=dev, dtype=dtype, requires_grad=True)  # noqa: E731
    tq, tk, tv, sq, sk, sv = mk(F), mk(F), mk(D), mk(D), mk(D), mk(D)
    backend = SDPBackend.FLASH_ATTENTION if dev == "cuda" else SDPBackend.MATH

    def sdpa():
        with sdpa_kernel(backend):
            return scaled_dot_product_attention(sq, sk, sv, is_causal=True)

    return {"triton_core": lambda: tlin.causal_triton(tq, tk, tv, relu=True), "softmax_core": sdpa}
