"""What the GPU checks (gpu_check.py, gpu_triton_check.py, gpu_precision.py) share: the device and
dtypes they run in, the random attention inputs, the relative error, CUDA-event timing and peak
memory of one step, and how a part's failure and the result file are recorded.

``DEVICE`` is "cuda", or "cpu" once a check's CPU smoke mode (a check of the script itself, whose
figures mean nothing) has called ``choose_device``; the helpers read it at call time."""
import json
import os
import statistics
import sys
import time
import traceback

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE = "cuda"


def choose_device(cpu_smoke: bool, script: str):
    """The CPU for a smoke run; else CUDA, or exit with one line when there is none."""
    global DEVICE
    if cpu_smoke:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        sys.exit(f"{script} needs CUDA (or --cpu-smoke to check the script itself)")


def features(B, H, T, F, D, dtype, seed=0):
    """[q (B, H, T, F), k (B, H, T, F), v (B, H, T, D)] on DEVICE in ``dtype``, leaves that require
    grad: q, k relu'd normal / sqrt(F) (feature maps' outputs), v normal, keys T//3 .. T//3+6 zero
    (padding)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.relu(torch.randn(B, H, T, F, device=DEVICE, generator=g)) / F ** 0.5
    k = torch.relu(torch.randn(B, H, T, F, device=DEVICE, generator=g)) / F ** 0.5
    v = torch.randn(B, H, T, D, device=DEVICE, generator=g)
    k[:, :, T // 3 : T // 3 + 7] = 0  # a few padded keys
    return [t.to(dtype).requires_grad_() for t in (q, k, v)]


def rel_err(a, b) -> float:
    """max |a - b| / max |b| in float64 (a, b of one shape, on one device)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def cuda_time(fn, repeats, warmup=2):
    """(median ms, [ms of each call]) of ``fn()`` after ``warmup`` calls: CUDA events on CUDA, the
    wall clock on the CPU."""
    if DEVICE == "cpu":
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times), times
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), times


def peak_mb(step) -> float:
    """MiB of CUDA memory ``step()`` allocates at its peak beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def time_step(row, name, step, repeats):
    """``step`` (already warmed up) into row["peak_MB"][name] (on CUDA) and row["ms"][name] (median
    of ``repeats`` after one more warm-up call)."""
    if DEVICE == "cuda":
        row["peak_MB"][name] = peak_mb(step)
    row["ms"][name], _ = cuda_time(step, repeats, warmup=1)


def error_text(e: Exception) -> str:
    """One failure as a row records it: type and message, at most 500 characters."""
    return f"{type(e).__name__}: {e}"[:500]


def record_failure(result, label):
    """The exception being handled, as ``label: traceback`` (its last 3000 characters), into
    result["errors"] and on stdout."""
    result["errors"].append(f"{label}: " + traceback.format_exc()[-3000:])
    print(result["errors"][-1], flush=True)


def t2r_attention(dim, heads, feature_dim):
    """A T2RAttention (t2r feature map, k = ``feature_dim``) converted from fairseq's
    MultiheadAttention(dim, heads) built under seed 0. Needs fairseq."""
    from fairseq.modules import MultiheadAttention

    import fairseq_t2r.models  # noqa: F401  (registers the T2R models)
    from fairseq_t2r.modules import T2RAttention

    torch.manual_seed(0)
    return T2RAttention.from_softmax(MultiheadAttention(dim, heads, self_attention=True), "t2r", feature_dim)


def write_result(out, name, result, ok) -> int:
    """``result`` to OUT/NAME.json, the verdict line (with result["wall_s"]) on stdout; -> the exit
    code (0 when ``ok``)."""
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED (see above)'}; wrote {path} in {result['wall_s']:.0f} s")
    return 0 if ok else 1
