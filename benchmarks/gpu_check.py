#!/usr/bin/env python
"""GPU check: our chunked linear attention vs flash-linear-attention's kernel, and layer speed.

Needs CUDA, Triton and ``fla`` (``pip install flash-linear-attention`` / the ``.[gpu]`` extra)
and fairseq. Three parts:

1. equality: ``ops.causal_chunked`` (our PyTorch chunked form, on the GPU) against
   ``ops.causal_fla`` (fla's ``chunk_linear_attn`` with ``normalize=False`` + our eps-clamped
   normaliser), outputs and gradients, in fp32 (tight; fla's Triton matmuls may run in TF32) and
   bf16 / fp16 (loose), plus both against ``causal_reference`` in float64 on a short sequence;
2. timing: one attention layer (512 dims, 8 heads, k = 32, batch 1), forward + backward, for
   fp32 / bf16 / fp16 at 1024 / 4096 / 8192 tokens: T2RAttention with our chunked form ("ours"),
   T2RAttention with fla ("fla"), fairseq's MultiheadAttention ("softmax", PyTorch SDPA), called
   as fairseq's decoder layer calls them; CUDA-event medians, peak allocated memory of one step
   after a warm-up step, and the layer output of the fla path against ours;
3. a table on stdout and ``gpu_check.json`` in ``--out``.

    python3 -m benchmarks.gpu_check --out DIR
"""
import argparse
import os
import sys
import time

import torch

from benchmarks import gpu_common
from benchmarks.gpu_common import DTYPES, features, record_failure, rel_err
from benchmarks.report import checked, table, verdict

# max |ours - fla| / max |ours| allowed: fp32 is tight up to TF32 rounding in fla's kernels
TOL = {"fp32": 5e-3, "bf16": 5e-2, "fp16": 2e-2}


def check_equality(ops, lengths):
    rows = []
    for name, dtype in DTYPES.items():
        for T in lengths:
            q, k, v = features(2, 8, T, 32, 64, dtype, seed=T)
            g = torch.randn(2, 8, T, 64, device=gpu_common.DEVICE, dtype=dtype)
            ours = ops.causal_chunked(q, k, v)
            d_ours = torch.autograd.grad(ours, (q, k, v), g)
            fla = ops.causal_fla(q, k, v)
            d_fla = torch.autograd.grad(fla, (q, k, v), g)
            row = {"dtype": name, "length": T, "out_rel_err": rel_err(fla, ours),
                   "grad_rel_err": max(rel_err(a, b) for a, b in zip(d_fla, d_ours)),
                   "out_dtype_ok": fla.dtype == ours.dtype == dtype}
            row["pass"] = row["out_rel_err"] <= TOL[name] and row["grad_rel_err"] <= TOL[name] * 4 and row["out_dtype_ok"]
            rows.append(row)
            print(f"equality {name} T={T}: out rel err {row['out_rel_err']:.2e}, grad rel err "
                  f"{row['grad_rel_err']:.2e} -> {'PASS' if row['pass'] else 'FAIL'}", flush=True)
    # both against the float64 token-by-token reference (short)
    q, k, v = features(1, 2, 300, 32, 64, torch.float64, seed=1)
    with torch.no_grad():
        ref = ops.causal_reference(q, k, v)
        ref_rows = {"ours_fp64": rel_err(ops.causal_chunked(q, k, v), ref)}
        q32, k32, v32 = (t.float() for t in (q, k, v))
        ref_rows["ours_fp32"] = rel_err(ops.causal_chunked(q32, k32, v32), ref)
        ref_rows["fla_fp32"] = rel_err(ops.causal_fla(q32, k32, v32), ref)
    print("vs float64 reference (T=300): " + ", ".join(f"{k} {v:.2e}" for k, v in ref_rows.items()), flush=True)
    return {"rows": rows, "vs_reference": ref_rows, "tolerance": TOL}


def time_layers(ops, lengths, repeats, dim=512, heads=8, feature_dim=32, with_fla=True):
    from fairseq.modules import MultiheadAttention

    torch.manual_seed(0)
    mha = MultiheadAttention(dim, heads, self_attention=True)
    t2r = gpu_common.t2r_attention(dim, heads, feature_dim)
    rows = []
    for name, dtype in DTYPES.items():
        dev = gpu_common.DEVICE
        mods = {"softmax": mha.to(dev, dtype).train(), "t2r": t2r.to(dev, dtype).train()}
        for T in lengths:
            row = time_length(ops, mods, name, dtype, T, dim, repeats, with_fla)
            rows.append(row)
            print_layer_row(row)
    return rows


def time_length(ops, mods, name, dtype, T, dim, repeats, with_fla):
    """One row: every variant's fwd+bwd time and peak memory at length T, and the fla path's error."""
    from fairseq_t2r.ops import dispatch  # the fla switch, read at call time

    dev = gpu_common.DEVICE
    x = torch.randn(T, 1, dim, device=dev, dtype=dtype, requires_grad=True)
    grad = torch.randn(T, 1, dim, device=dev, dtype=dtype)
    mask = torch.full((T, T), float("-inf"), device=dev, dtype=dtype).triu_(1)
    row = {"dtype": name, "length": T, "ms": {}, "peak_MB": {}, "errors": {}}
    outputs = {}
    variants = [("ours", "t2r", False), ("fla", "t2r", True), ("softmax", "softmax", False)]
    for variant, mod, use_fla in [v for v in variants if with_fla or not v[2]]:
        dispatch.set_backends(fla=use_fla)
        time_variant(mods[mod], x, grad, mask, variant, row, outputs, repeats)
    dispatch.set_backends(fla=with_fla)
    if "ours" in outputs and "fla" in outputs:  # the whole layer, fla path vs ours
        row["layer_out_rel_err"] = rel_err(outputs["fla"], outputs["ours"])
    if with_fla and (ops.fla_kernel() is None or dev == "cpu"):
        row["errors"]["fla"] = "no fla kernel on this device: the 'fla' column ran our chunked form"
    ms = row["ms"]
    if "softmax" in ms:
        for v in ("ours", "fla"):
            if v in ms:
                row[f"speedup_{v}"] = ms["softmax"] / ms[v]
    return row


def time_variant(m, x, grad, mask, variant, row, outputs, repeats):
    """Time layer ``m`` into row["ms"][variant] (peak memory too on CUDA), its output into outputs;
    a failure goes to row["errors"]."""
    def step(keep=False):
        out, _ = m(x, x, x, attn_mask=mask, need_weights=False)
        out.backward(grad)
        if keep:
            outputs[variant] = out.detach()
    try:
        step(keep=True)  # warm-up: kernel compilation / autotuning, output kept
        m.zero_grad(set_to_none=True)
        x.grad = None
        gpu_common.time_step(row, variant, step, repeats)
    except Exception as e:  # keep going: report what failed
        row["errors"][variant] = gpu_common.error_text(e)
    m.zero_grad(set_to_none=True)
    x.grad = None


def print_layer_row(row):
    ms = row["ms"]
    cell = lambda v: f"{ms[v]:8.2f}" if v in ms else "   error"  # noqa: E731
    mem = lambda v: f"{row['peak_MB'][v]:7.0f}" if v in row["peak_MB"] else "      -"  # noqa: E731
    err = f" | layer out fla vs ours {row['layer_out_rel_err']:.1e}" if "layer_out_rel_err" in row else ""
    print(f"{row['dtype']:>5} {row['length']:>6} | {cell('ours')} {cell('fla')} {cell('softmax')} ms | "
          f"{mem('ours')} {mem('fla')} {mem('softmax')} MB{err}"
          + (f" | errors: {row['errors']}" if row["errors"] else ""), flush=True)


def _stand_in_kernel(q, k, v, scale=None, normalize=True, **kw):
    """--cpu-smoke only: what fla's chunk_linear_attn(normalize=False) computes, in PyTorch."""
    S = torch.einsum("bthf,bthd->bthfd", k.float(), v.float()).cumsum(1)
    return (scale * torch.einsum("bthf,bthfd->bthd", q.float(), S)).to(v.dtype), None


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json")
    p.add_argument("--lengths", default="1024,4096,8192")
    p.add_argument("--check-lengths", default="1000,4096")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-fla", action="store_true", help="time ours vs softmax only (an fla crash poisons "
                   "the CUDA context for everything after it)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="check this script without a GPU: CPU tensors, a PyTorch stand-in for fla's kernel, "
                        "small lengths (the figures mean nothing)")
    return p


def set_up(a, result):
    """CUDA (or, for --cpu-smoke, the CPU with a stand-in kernel and small lengths); the GPU, CUDA
    and fla versions go to result["machine"]."""
    from fairseq_t2r.ops import kernels  # holds _FLA_KERNEL, which the forms read

    gpu_common.choose_device(a.cpu_smoke, "gpu_check")
    if a.cpu_smoke:
        kernels._FLA_KERNEL = (_stand_in_kernel, {})
        a.lengths, a.check_lengths, a.repeats = "256", "200", 2
        result["cpu_smoke"] = True
    else:
        result["machine"]["gpu"] = torch.cuda.get_device_name()
        result["machine"]["cuda"] = torch.version.cuda
    try:
        import fla

        result["machine"]["fla"] = getattr(fla, "__version__", "?")
    except Exception as e:
        result["machine"]["fla"] = None
        if not a.cpu_smoke:
            result["errors"].append(f"fla not importable: {e}")
    print(f"{result['machine'].get('gpu', 'CPU smoke run')}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"fla {result['machine']['fla']}", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False  # ours in true fp32


def run_equality(ops, a, result):
    """Part 1 into result["equality"], unless fla is off or missing; a crash goes to result["errors"]."""
    if a.no_fla:
        result["errors"] = [e for e in result["errors"] if not e.startswith("fla not importable")]
    elif ops.fla_kernel() is not None:
        try:
            result["equality"] = check_equality(ops, [int(x) for x in a.check_lengths.split(",")])
        except Exception:
            record_failure(result, "equality")
    else:
        result["errors"].append("fla's chunk_linear_attn not importable: equality check skipped")


def run_timing(ops, a, result):
    """Part 2 into result["layer"]; a crash goes to result["errors"]."""
    print(f"\n{'dtype':>5} {'T':>6} | {'ours':>8} {'fla':>8} {'softmax':>8} ms | {'ours':>7} {'fla':>7} "
          f"{'softmax':>7} MB (fwd+bwd, median of {a.repeats}; peak allocated)", flush=True)
    try:
        result["layer"] = time_layers(ops, [int(x) for x in a.lengths.split(",")], a.repeats, with_fla=not a.no_fla)
    except Exception:
        record_failure(result, "layer timing")


def main(argv=None):
    a = build_parser().parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    from benchmarks.common import machine
    from fairseq_t2r import ops

    result = {"benchmark": "gpu_check: ours vs fla vs fairseq softmax, attention layer fwd+bwd",
              "machine": machine(), "errors": []}
    set_up(a, result)
    t0 = time.perf_counter()
    run_equality(ops, a, result)
    run_timing(ops, a, result)
    result["wall_s"] = time.perf_counter() - t0
    ok = all(r["pass"] for r in result.get("equality", {}).get("rows", [])) and not result["errors"]
    if not a.cpu_smoke:
        ok = ok and not any(r["errors"] for r in result.get("layer", []))
    return gpu_common.write_result(a.out, "gpu_check", result, ok)


# ----------------------------------------------------------- the speed table's rows and section
# (run_all.py writes docs/results/speed.md from these and this script's JSON)
def targets(gpu):
    if not gpu.get("equality"):
        return []
    ok = all(r["pass"] for r in gpu["equality"]["rows"])
    worst = max(r["out_rel_err"] for r in gpu["equality"]["rows"] if r["dtype"] == "fp32")
    return [checked("GPU", "ours == fla (fp32 tight, bf16/fp16 loose)", f"fp32 rel err {worst:.1e}", "all pass", ok)]


def section(gpu):
    lines = ["", "## GPU (gpu_check.py)", ""]
    if gpu.get("equality"):
        lines += table([[r["dtype"], r["length"], f"{r['out_rel_err']:.1e}", f"{r['grad_rel_err']:.1e}",
                         verdict(r["pass"]).replace("MISS", "FAIL")] for r in gpu["equality"]["rows"]],
                       ["dtype", "length", "out rel err", "grad rel err", ""])
    if gpu.get("layer"):
        lines += [""] + table([[r["dtype"], r["length"]] + [f"{r['ms'].get(v, float('nan')):.2f}" for v in ("ours", "fla", "softmax")]
                               + [f"{r['peak_MB'].get(v, float('nan')):.0f}" for v in ("ours", "fla", "softmax")]
                               for r in gpu["layer"]],
                              ["dtype", "length", "ours ms", "fla ms", "softmax ms", "ours MB", "fla MB", "softmax MB"])
    for e in gpu.get("errors", []):
        lines.append(f"- error: {e.splitlines()[-1] if e else e}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
