#!/usr/bin/env python
"""Device check of ops/triton_linear.py (the fused Triton kernels for causal linear attention).

Needs CUDA and triton (``pip install .[gpu]``). Two parts, about 2 minutes on an H200:

1. equality: ``causal_triton`` (phi given, and relu on load) against the float64 token-by-token
   ``causal_reference``, outputs and gradients of q, k, v, with padded keys, in fp32 (IEEE matmuls)
   and bf16 at T = 1024 and 8192 (B = 1, 8 heads, k = 32, d = 64); the PyTorch chunked form's
   error in the same dtype is printed beside it, as the yardstick of the dtype's rounding;
2. timing, bf16, forward + backward, CUDA-event medians, at 1024 / 4096 / 8192 tokens:
   one layer (512 dims, 8 heads, k = 32: input projection, attention, output projection) with
   the Triton kernels ("triton"), with today's training form ``causal_relu_from_input``
   ("chunked"), and softmax through PyTorch SDPA's flash kernel, causal ("softmax"); and the
   attention alone (triton vs SDPA flash), plus peak memory of one layer step.

    python benchmarks/gpu_triton_check.py --out DIR      # writes DIR/gpu_triton_check.json
    python benchmarks/gpu_triton_check.py --out DIR --cpu-smoke   # this script on CPU, Triton's
                                          # interpreter, tiny sizes (figures mean nothing)
Exits 1 with one line when there is no CUDA; 1 when a check fails.
"""
import argparse
import json
import os
import sys
import time
import traceback

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

import gpu_check  # noqa: E402  (puts the repository on sys.path; features, cuda_time, rel_err)
import torch  # noqa: E402
from gpu_check import cuda_time, features, rel_err  # noqa: E402

# max relative error vs float64: fp32 sums of ~C + T / C fp32-rounded terms; bf16 operands
# rounded to 8 bits (u = 3.9e-3) before fp32-accumulated matmuls
TOL = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}
DIM, HEADS, F, D = 512, 8, 32, 64


def check_equality(ops, tlin, lengths, dtypes):
    rows = []
    for T in lengths:
        ref_in = features(1, HEADS, T, F, D, torch.float64, seed=T)  # relu'd, keys T//3.. zero (padding)
        dout = torch.randn(1, HEADS, T, D, device=gpu_check.DEVICE, dtype=torch.float64)
        t0 = time.perf_counter()
        ref = ops.causal_reference(*ref_in)
        ref_g = torch.autograd.grad(ref, ref_in, dout)
        ref_s = time.perf_counter() - t0
        for name in dtypes:
            row = {"dtype": name, "length": T, "reference_s": ref_s}
            for form in ("triton", "triton_relu", "chunked"):
                xs = [t.detach().to(gpu_check.DTYPES[name]).requires_grad_() for t in ref_in]
                if form == "chunked":
                    out = ops.causal_chunked(*xs)
                else:
                    out = tlin.causal_triton(*xs, relu=form == "triton_relu")
                g = torch.autograd.grad(out, xs, dout.to(out.dtype))
                want = ref_g
                if form == "triton_relu":  # relu's gradient: zero where the input is not > 0
                    want = [ref_g[0] * (ref_in[0] > 0), ref_g[1] * (ref_in[1] > 0), ref_g[2]]
                row[form] = {"out": rel_err(out, ref), **{f"d{n}": rel_err(a, b) for n, a, b in zip("qkv", g, want)}}
            worst = max(max(row[f].values()) for f in ("triton", "triton_relu"))
            row["pass"] = worst <= TOL[name]
            rows.append(row)
            print(f"equality {name} T={T}: triton {fmt(row['triton'])} | relu on load {fmt(row['triton_relu'])} | "
                  f"chunked (PyTorch) {fmt(row['chunked'])} -> {'PASS' if row['pass'] else 'FAIL'}", flush=True)
    return {"rows": rows, "tolerance": TOL}


def fmt(errs):
    return " ".join(f"{k} {v:.1e}" for k, v in errs.items())


def layers(ops, tlin, dtype):
    """name -> fn(x (B, T, DIM)) -> (B, T, DIM): one attention layer each, same sizes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import linear, scaled_dot_product_attention

    dev = gpu_check.DEVICE
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

    def chunked(x):  # today's training form for relu features (T2RAttention's path)
        o = ops.causal_relu_from_input(x.transpose(0, 1), w_t2r, None, HEADS, F)
        return linear(o.transpose(0, 1), w_out)

    return {"triton": triton, "chunked": chunked, "softmax": softmax}


def cores(tlin, dtype, T):
    """Attention alone, fwd+bwd inputs: triton (relu on load) and SDPA flash, (1, 8, T, X)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    dev = gpu_check.DEVICE
    mk = lambda X: torch.randn(1, HEADS, T, X, device=dev, dtype=dtype, requires_grad=True)  # noqa: E731
    tq, tk, tv, sq, sk, sv = mk(F), mk(F), mk(D), mk(D), mk(D), mk(D)
    backend = SDPBackend.FLASH_ATTENTION if dev == "cuda" else SDPBackend.MATH

    def sdpa():
        with sdpa_kernel(backend):
            return scaled_dot_product_attention(sq, sk, sv, is_causal=True)

    return {"triton_core": lambda: tlin.causal_triton(tq, tk, tv, relu=True), "softmax_core": sdpa}


def time_all(ops, tlin, lengths, repeats, dtype_name="bf16"):
    dtype, rows = gpu_check.DTYPES[dtype_name], []
    fns = layers(ops, tlin, dtype)
    for T in lengths:
        row = {"dtype": dtype_name, "length": T, "ms": {}, "peak_MB": {}, "errors": {}}
        x = torch.randn(1, T, DIM, device=gpu_check.DEVICE, dtype=dtype, requires_grad=True)
        calls = {n: (lambda f=f: f(x)) for n, f in fns.items()}
        calls.update(cores(tlin, dtype, T))
        for name, fn in calls.items():
            try:
                grad = torch.randn_like(fn())
                step = lambda fn=fn, grad=grad: fn().backward(grad)  # noqa: E731
                step()
                if gpu_check.DEVICE == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    step()
                    torch.cuda.synchronize()
                    row["peak_MB"][name] = (torch.cuda.max_memory_allocated() - base) / 2**20
                row["ms"][name], _ = cuda_time(step, repeats, warmup=1)
            except Exception as e:
                row["errors"][name] = f"{type(e).__name__}: {e}"[:500]
        ms = row["ms"]
        for a, b in (("triton", "softmax"), ("chunked", "softmax"), ("triton_core", "softmax_core")):
            if a in ms and b in ms:
                row[f"{a}_over_{b}"] = ms[a] / ms[b]
        rows.append(row)
        cells = " ".join(f"{n} {ms[n]:.2f}" if n in ms else f"{n} error" for n in calls)
        print(f"{dtype_name} T={T:6d} ms (fwd+bwd): {cells}" + (f" | errors {row['errors']}" if row["errors"] else ""),
              flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_triton_check.json")
    p.add_argument("--check-lengths", default="1024,8192")
    p.add_argument("--lengths", default="1024,4096,8192")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cpu-smoke", action="store_true", help="check this script on CPU (interpreter, tiny sizes)")
    a = p.parse_args(argv)
    dtypes = ["fp32", "bf16"]
    if a.cpu_smoke:
        gpu_check.DEVICE = "cpu"
        a.check_lengths, a.lengths, a.repeats, dtypes = "70", "64", 1, ["fp32", "fp16"]  # interpreter: no bf16
    elif not torch.cuda.is_available():
        sys.exit("gpu_triton_check needs CUDA (or --cpu-smoke to check the script itself)")
    import triton
    from common import machine

    from fairseq_t2r import ops
    from fairseq_t2r.ops import triton_linear as tlin

    os.makedirs(a.out, exist_ok=True)
    result = {"benchmark": "gpu_triton_check: fused Triton linear attention vs float64 reference; "
              "layer fwd+bwd vs SDPA flash", "machine": machine(), "triton": triton.__version__, "errors": []}
    if not a.cpu_smoke:
        result["machine"]["gpu"] = torch.cuda.get_device_name()
    print(f"{result['machine'].get('gpu', 'CPU smoke run')}, torch {torch.__version__}, triton {triton.__version__}",
          flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.perf_counter()
    for key, part in (("equality", lambda: check_equality(ops, tlin, [int(x) for x in a.check_lengths.split(",")], dtypes)),
                      ("timing", lambda: time_all(ops, tlin, [int(x) for x in a.lengths.split(",")], a.repeats,
                                                  "fp32" if a.cpu_smoke else "bf16"))):
        try:
            result[key] = part()
        except Exception:
            result["errors"].append(f"{key}: " + traceback.format_exc()[-3000:])
            print(result["errors"][-1], flush=True)
    result["wall_s"] = time.perf_counter() - t0
    path = os.path.join(a.out, "gpu_triton_check.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    ok = (not result["errors"] and all(r["pass"] for r in result["equality"]["rows"])
          and not any(r["errors"] for r in result["timing"]))
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED (see above)'}; wrote {path} in {result['wall_s']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
