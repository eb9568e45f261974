#!/usr/bin/env python
"""Device check of ops/additive/triton.py (the fused Triton kernels for causal linear attention).

Needs CUDA and triton (``pip install .[gpu]``); fairseq only for the T2RAttention rows (skipped,
with a line, where it is not installed); the layers it runs are gpu_triton_layers.py's. Four parts,
estimated under 4 minutes on an H200 (not yet measured there):

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
import os
import sys
import time

if "--cpu-smoke" in sys.argv:  # the interpreter must be chosen before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch

from benchmarks import gpu_common
from benchmarks.gpu_common import DTYPES, features, rel_err
from benchmarks.gpu_triton_layers import DIM, HEADS, D, F, cores, layers, t2r_module, triton_flag

# max relative error vs float64: fp32 sums of ~C + T / C fp32-rounded terms; bf16 operands
# rounded to 8 bits (u = 3.9e-3) before fp32-accumulated matmuls
TOL = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}


def check_equality(ops, tlin, lengths, dtypes):
    rows = []
    for T in lengths:
        ref_in = features(1, HEADS, T, F, D, torch.float64, seed=T)  # relu'd, keys T//3.. zero (padding)
        dout = torch.randn(1, HEADS, T, D, device=gpu_common.DEVICE, dtype=torch.float64)
        t0 = time.perf_counter()
        ref = ops.causal_reference(*ref_in)
        ref_g = torch.autograd.grad(ref, ref_in, dout)
        ref_s = time.perf_counter() - t0
        for name in dtypes:
            row = {"dtype": name, "length": T, "reference_s": ref_s}
            for form in ("triton", "triton_relu", "chunked"):
                xs = [t.detach().to(DTYPES[name]).requires_grad_() for t in ref_in]
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


def time_all(ops, tlin, lengths, repeats, dtype_name="bf16"):
    dtype, rows = DTYPES[dtype_name], []
    fns = layers(ops, tlin, dtype)
    _, module = t2r_module(dtype)
    if module is not None:
        fns.update(module_unset=lambda x: module(x, False), module_triton_env=lambda x: module(x, True))
    for T in lengths:
        row = {"dtype": dtype_name, "length": T, "ms": {}, "peak_MB": {}, "errors": {}}
        x = torch.randn(1, T, DIM, device=gpu_common.DEVICE, dtype=dtype, requires_grad=True)
        calls = {n: (lambda f=f: f(x)) for n, f in fns.items()}
        calls.update(cores(tlin, dtype, T))
        for name, fn in calls.items():
            try:
                grad = torch.randn_like(fn())
                step = lambda fn=fn, grad=grad: fn().backward(grad)  # noqa: E731
                step()
                gpu_common.time_step(row, name, step, repeats)
            except Exception as e:
                row["errors"][name] = gpu_common.error_text(e)
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
    dev, dtype, n0 = gpu_common.DEVICE, DTYPES[name], len(calls)
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

    cuda, real = gpu_common.DEVICE == "cuda", chunked_passes.heads_per_group
    act, kind = (ProfilerActivity.CUDA, torch.autograd.DeviceType.CUDA) if cuda else (ProfilerActivity.CPU, torch.autograd.DeviceType.CPU)
    fns, rows = layers(ops, tlin, DTYPES[dtype_name]), []
    variants = (("chunked", "chunked", False), ("chunked_cpu_groups", "chunked", True),
                ("relu_triton_env", "relu_triton_env", False), ("softmax", "softmax", False))
    for T in lengths:
        x = torch.randn(1, T, DIM, device=gpu_common.DEVICE, dtype=DTYPES[dtype_name], requires_grad=True)
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
                row["errors"][name] = gpu_common.error_text(e)
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
    gpu_common.choose_device(a.cpu_smoke, "gpu_triton_check")
    if a.cpu_smoke:
        a.check_lengths, a.lengths, a.repeats, dtypes = "70", "64,160", 1, ["fp32", "fp16"]  # interpreter: no bf16
        a.wiring_lengths = "160"  # past QUADRATIC_MAX_LEN
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
            gpu_common.record_failure(result, key)
    result["wall_s"] = time.perf_counter() - t0
    ok = (not result["errors"] and all(r["pass"] for r in result["equality"]["rows"] + result["wiring"]["rows"])
          and not any(r["errors"] for r in result["timing"] + result["launches"]))
    return gpu_common.write_result(a.out, "gpu_triton_check", result, ok)


if __name__ == "__main__":
    sys.exit(main())
