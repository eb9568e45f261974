#!/usr/bin/env python
"""Device check of ops/additive/triton.py (the fused Triton kernels for causal linear attention).

Needs CUDA and triton (``pip install .[gpu]``); fairseq only for the T2RAttention rows (skipped,
with a line, where it is not installed). Four parts, estimated under 4 minutes on an H200 (not
yet measured there):

1. equality: ``causal_triton`` (phi given, and relu on load) against the float64 token-by-token
   ``causal_reference``, outputs and gradients of q, k, v, with padded keys, in fp32 (IEEE matmuls)
   and bf16 at T = 1024 and 8192 (B = 1, 8 heads, k = 32, d = 64); the PyTorch chunked form's
   error in the same dtype is printed beside it, as the yardstick of the dtype's rounding;
2. timing, bf16, forward + backward, CUDA-event medians, at 1024 / 4096 / 8192 tokens:
   one layer (512 dims, 8 heads, k = 32: input projection, attention, output projection) with
   the Triton kernels ("triton"), with today's training form ``causal_relu_from_input``
   ("chunked"), and softmax through PyTorch SDPA's flash kernel, causal ("softmax"); and the
   attention alone (triton vs SDPA flash), plus peak memory of one layer step; and T2R's relu
   training form as dispatch routes it (``causal_relu_from_input``, and a whole T2RAttention as
   fairseq calls it) with FAIRSEQ_T2R_TRITON=1 ("relu_triton_env", "module_triton_env") and unset
   ("chunked", "module_unset");
3. wiring: with the flag, causal_relu_from_input and T2RAttention reach the Triton kernels
   (counted) and match the unset form (fp32 and bf16, outputs and gradients, vs float64, within
   the larger of TOL and 4x the unset form's own error in that dtype);
4. launches: kernels launched by one fwd+bwd (torch.profiler) of the chunked relu form with all
   heads in one group (today on CUDA) and with the CPU-sized head groups (before), the triton
   relu form and SDPA flash, at 1024 and 8192 tokens.

    python -m benchmarks.gpu_triton_check --out DIR      # writes DIR/gpu_triton_check.json
    python -m benchmarks.gpu_triton_check --out DIR --cpu-smoke   # this script on CPU, Triton's
                                          # interpreter, tiny sizes (figures mean nothing)
Exits 1 with one line when there is no CUDA; 1 when a check fails.
"""
import argparse
import contextlib
import json
import os
import sys
import time
import traceback

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import cuda_time, features, rel_err

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
        from fairseq.modules import MultiheadAttention
    except ImportError as e:
        print(f"T2RAttention parts skipped: fairseq not importable ({e})", flush=True)
        return None, None

    import fairseq_t2r.models  # noqa: F401  (registers the T2R models)
    from fairseq_t2r.modules import T2RAttention

    torch.manual_seed(0)
    m = T2RAttention.from_softmax(MultiheadAttention(DIM, HEADS, self_attention=True), "t2r", F)
    m = m.to(gpu_check.DEVICE, dtype).train()

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
    _, module = t2r_module(dtype)
    if module is not None:
        fns.update(module_unset=lambda x: module(x, False), module_triton_env=lambda x: module(x, True))
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
                    row["peak_MB"][name] = gpu_check.peak_mb(step)
                row["ms"][name], _ = cuda_time(step, repeats, warmup=1)
            except Exception as e:
                row["errors"][name] = f"{type(e).__name__}: {e}"[:500]
        ms = row["ms"]
        for a, b in (("triton", "softmax"), ("chunked", "softmax"), ("relu_triton_env", "softmax"),
                     ("module_unset", "softmax"), ("module_triton_env", "softmax"), ("triton_core", "softmax_core")):
            if a in ms and b in ms:
                row[f"{a}_over_{b}"] = ms[a] / ms[b]
        rows.append(row)
        cells = " ".join(f"{n} {ms[n]:.2f}" if n in ms else f"{n} error" for n in calls)
        print(f"{dtype_name} T={T:6d} ms (fwd+bwd): {cells}" + (f" | errors {row['errors']}" if row["errors"] else ""),
              flush=True)
    return rows


def check_wiring(ops, lengths, dtypes):
    """Part 3: with the flag, causal_relu_from_input (padded keys) and T2RAttention reach the Triton
    kernels (calls counted: must be > 0 on CUDA) and agree with the unset forms."""
    from fairseq_t2r.ops.additive import fused_relu

    calls, real = [], fused_relu.causal_relu_triton_from_input
    fused_relu.causal_relu_triton_from_input = lambda *a: calls.append(1) or real(*a)
    try:
        rows = [wiring_row(ops, T, name, calls) for T in lengths for name in dtypes]
    finally:
        fused_relu.causal_relu_triton_from_input = real
    return {"rows": rows, "tolerance": TOL}


def wiring_row(ops, T, name, calls):
    dev, dtype, n0 = gpu_check.DEVICE, gpu_check.DTYPES[name], len(calls)
    torch.manual_seed(T)
    x = torch.randn(T, 2, DIM, device=dev, dtype=torch.float64)
    w = torch.randn(HEADS * (2 * F + D), DIM, device=dev, dtype=torch.float64) / DIM**0.5
    b, dout = torch.randn(w.size(0), device=dev, dtype=torch.float64), torch.randn(T, 2, HEADS * D, device=dev, dtype=torch.float64)
    mask = torch.zeros(2, T, dtype=torch.bool, device=dev)
    mask[1, : T // 4] = True  # left padding

    def run(dt, flag):
        xs, ws, bs = (t.detach().to(dt).requires_grad_() for t in (x, w, b))
        with triton_flag(flag):
            out = ops.causal_relu_from_input(xs, ws, bs, HEADS, F, mask)
        return dict(zip(("out", "dx", "dW", "db"), [out] + list(torch.autograd.grad(out, (xs, ws, bs), dout.to(dt)))))

    want = run(torch.float64, False)
    flagged, unset = run(dtype, True), run(dtype, False)
    row = {"dtype": name, "length": T, "relu_triton_env": {k: rel_err(flagged[k], want[k]) for k in want},
           "chunked": {k: rel_err(unset[k], want[k]) for k in want}}
    m, module = t2r_module(dtype)
    row["module_triton_env_vs_unset"] = {}
    if module is not None:
        xm = x[:, :1].transpose(0, 1).to(dtype).requires_grad_()
        outs = {}
        for flag in (True, False):
            out = module(xm, flag)
            outs[flag] = [out] + list(torch.autograd.grad(out, (xm, m.q_proj.weight), dout[:, :1, :DIM].transpose(0, 1).to(dtype)))
        row["module_triton_env_vs_unset"] = {k: rel_err(a, b_) for k, a, b_ in zip(("out", "dx", "dWq"), outs[True], outs[False])}
    row["triton_calls"] = len(calls) - n0
    # yardstick: the unset form's own error in this dtype (the projection's rounding in half
    # precision, denominators near the eps clamp); the kernels also round A to the operand dtype
    row["bound"] = max(TOL[name], 4 * max(row["chunked"].values()))
    worst = max(*row["relu_triton_env"].values(), *row["module_triton_env_vs_unset"].values())
    expected_calls = 1 + (module is not None) if dev == "cuda" else 0
    row["pass"] = worst <= row["bound"] and row["triton_calls"] == expected_calls
    print(f"wiring {name} T={T}: triton calls {row['triton_calls']} | relu_from_input flag vs float64 "
          f"{fmt(row['relu_triton_env'])} (unset: {fmt(row['chunked'])}) | module flag vs unset "
          f"{fmt(row['module_triton_env_vs_unset'])} -> {'PASS' if row['pass'] else 'FAIL'}", flush=True)
    return row


def launch_counts(ops, tlin, lengths, dtype_name):
    """Part 4: device kernels launched by one fwd+bwd of each layer (torch.profiler); with
    --cpu-smoke the profiler's CPU ops instead (figures meaningless)."""
    from torch.profiler import ProfilerActivity, profile

    from fairseq_t2r.ops.additive import chunked_passes

    cuda, real = gpu_check.DEVICE == "cuda", chunked_passes.heads_per_group
    act, kind = (ProfilerActivity.CUDA, torch.autograd.DeviceType.CUDA) if cuda else (ProfilerActivity.CPU, torch.autograd.DeviceType.CPU)
    fns, rows = layers(ops, tlin, gpu_check.DTYPES[dtype_name]), []
    variants = (("chunked", "chunked", False), ("chunked_cpu_groups", "chunked", True),
                ("relu_triton_env", "relu_triton_env", False), ("softmax", "softmax", False))
    for T in lengths:
        x = torch.randn(1, T, DIM, device=gpu_check.DEVICE, dtype=gpu_check.DTYPES[dtype_name], requires_grad=True)
        row = {"dtype": dtype_name, "length": T, "counted": "cuda kernels" if cuda else "cpu ops (smoke)", "launches": {},
               "errors": {}, "heads_per_group": {"cuda": real(HEADS, T, True), "cpu": real(HEADS, T, False)}}
        for name, fn, cpu_groups in variants:
            try:
                if cpu_groups:  # the head groups sized for CPU caches (before: on CUDA too)
                    chunked_passes.heads_per_group = lambda G, Tp, is_cuda: real(G, Tp, False)
                fns[fn](x).sum().backward()  # warm-up: compilation, autotuning
                with profile(activities=[act]) as prof:
                    fns[fn](x).sum().backward()
                    if cuda:
                        torch.cuda.synchronize()
                row["launches"][name] = sum(e.device_type == kind for e in prof.events())
            except Exception as e:
                row["errors"][name] = f"{type(e).__name__}: {e}"[:500]
            finally:
                chunked_passes.heads_per_group = real
        rows.append(row)
        print(f"launches ({row['counted']}, one fwd+bwd) {dtype_name} T={T}: {row['launches']} "
              f"heads per group {row['heads_per_group']}" + (f" | errors {row['errors']}" if row["errors"] else ""), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_triton_check.json")
    p.add_argument("--check-lengths", default="1024,8192")
    p.add_argument("--lengths", default="1024,4096,8192")
    p.add_argument("--wiring-lengths", default="1024")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--cpu-smoke", action="store_true", help="check this script on CPU (interpreter, tiny sizes)")
    a = p.parse_args(argv)
    dtypes = ["fp32", "bf16"]
    if a.cpu_smoke:
        gpu_check.DEVICE = "cpu"
        a.check_lengths, a.lengths, a.repeats, dtypes = "70", "64,160", 1, ["fp32", "fp16"]  # interpreter: no bf16
        a.wiring_lengths = "160"  # past QUADRATIC_MAX_LEN
    elif not torch.cuda.is_available():
        sys.exit("gpu_triton_check needs CUDA (or --cpu-smoke to check the script itself)")
    import triton

    from benchmarks.common import machine
    from fairseq_t2r import ops
    from fairseq_t2r.ops.additive import triton as tlin

    os.makedirs(a.out, exist_ok=True)
    result = {"benchmark": "gpu_triton_check: fused Triton linear attention vs float64 reference; "
              "layer fwd+bwd vs SDPA flash", "machine": machine(), "triton": triton.__version__, "errors": []}
    if not a.cpu_smoke:
        result["machine"]["gpu"] = torch.cuda.get_device_name()
    print(f"{result['machine'].get('gpu', 'CPU smoke run')}, torch {torch.__version__}, triton {triton.__version__}",
          flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.perf_counter()
    timed, lengths = "fp32" if a.cpu_smoke else "bf16", [int(x) for x in a.lengths.split(",")]
    for key, part in (("equality", lambda: check_equality(ops, tlin, [int(x) for x in a.check_lengths.split(",")], dtypes)),
                      ("wiring", lambda: check_wiring(ops, [int(x) for x in a.wiring_lengths.split(",")], dtypes)),
                      ("timing", lambda: time_all(ops, tlin, lengths, a.repeats, timed)),
                      ("launches", lambda: launch_counts(ops, tlin, [lengths[0], lengths[-1]], timed))):
        try:
            result[key] = part()
        except Exception:
            result["errors"].append(f"{key}: " + traceback.format_exc()[-3000:])
            print(result["errors"][-1], flush=True)
    result["wall_s"] = time.perf_counter() - t0
    path = os.path.join(a.out, "gpu_triton_check.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    ok = (not result["errors"] and all(r["pass"] for r in result["equality"]["rows"] + result["wiring"]["rows"])
          and not any(r["errors"] for r in result["timing"] + result["launches"]))
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED (see above)'}; wrote {path} in {result['wall_s']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
