"""training.py's parts: one attention layer's forward + backward (time and peak memory, in a
child process), the attention core alone (quadratic vs chunked form, chunk sizes), and the whole
LM."""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.common import FakeTask, make_dictionary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mha_and_t2r(dim, heads, feature_dim, seed=0):
    from fairseq.modules import MultiheadAttention

    import fairseq_t2r.models  # noqa: F401  (registers the T2R models)
    from fairseq_t2r.modules import T2RAttention

    torch.manual_seed(seed)
    mha = MultiheadAttention(dim, heads, self_attention=True)
    torch.manual_seed(seed)
    t2r = T2RAttention.from_softmax(MultiheadAttention(dim, heads, self_attention=True), "t2r", feature_dim)
    return {"softmax": mha.train(), "t2r": t2r.train()}


def state_layers(a):
    """One T2RAttention per state of ``a.states`` but the additive one, each on the weights
    _mha_and_t2r gives (same seed): ({variant: module}, {variant: why the module refused it})."""
    from fairseq.modules import MultiheadAttention

    from fairseq_t2r.modules import T2RAttention

    mods, skipped = {}, {}
    for row in a.states[1:]:
        torch.manual_seed(0)
        try:
            mods[row.variant] = T2RAttention.from_softmax(
                MultiheadAttention(a.dim, a.heads, self_attention=True), "t2r", a.feature_dim,
                state_options=row.state_options(), window_options=row.window_options()).train()
        except ValueError as e:
            skipped[row.variant] = str(e)
    return mods, skipped


def layer_modules(a):
    """{name: attention layer}: softmax, t2r, and with --states one per other state update."""
    mods = _mha_and_t2r(a.dim, a.heads, a.feature_dim)
    if a.states:
        mods.update(state_layers(a)[0])
    return mods


def causal_mask(T):
    # what fairseq's TransformerDecoder.buffered_future_mask builds (and caches)
    return torch.full((T, T), float("-inf")).triu_(1)


def layer_step(module, x, mask, grad):
    """One training step of the layer: forward, then backward from a given output gradient
    (allocated beforehand, like x, so that no loss function's temporaries enter the figures)."""
    out, _ = module(x, x, x, attn_mask=mask, need_weights=False)
    out.backward(grad)


CLOCK = time.perf_counter


def interleaved(fns, repeats):
    """{name: [seconds]}: every fn once per repeat, the order alternating between repeats."""
    times = {n: [] for n in fns}
    names = list(fns)
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = CLOCK()
            fns[n]()
            times[n].append(CLOCK() - t0)
    return times


def tune_row(T, fns, repeats, digits):
    """One warm-up call of each fn, then the fns interleaved: {"length": T, "ms": {name: median ms}}
    (printed with ``digits`` decimals)."""
    for f in fns.values():
        f()
    t = interleaved(fns, repeats)
    row = {"length": T, "ms": {n: 1000 * statistics.median(x) for n, x in t.items()}}
    print(f"tune T={T:>5}: " + ", ".join(f"{n} {m:.{digits}f} ms" for n, m in row["ms"].items()), flush=True)
    return row


# ------------------------------------------------------------------ tune: the core alone
def part_tune(a):
    from fairseq_t2r import ops

    H, F, D = a.heads, a.feature_dim, a.dim // a.heads
    rows = []

    def inputs(T):
        g = torch.Generator().manual_seed(T)
        # laid out as the module makes them: permuted views of (T, B, H, X) projections
        q = torch.relu(torch.randn(T, 1, H, F, generator=g)).permute(1, 2, 0, 3).requires_grad_()
        k = torch.relu(torch.randn(T, 1, H, F, generator=g)).permute(1, 2, 0, 3).requires_grad_()
        v = torch.randn(T, 1, H, D, generator=g).permute(1, 2, 0, 3).requires_grad_()
        return q, k, v

    def fwd_bwd(f, q, k, v):
        def run():
            out = f(q, k, v)
            out.backward(torch.ones_like(out))
        return run

    for T in a.tune_short:
        q, k, v = inputs(T)
        fns = {"quadratic": fwd_bwd(lambda q, k, v: ops.causal_quadratic(q, k, v), q, k, v),
               "chunked": fwd_bwd(lambda q, k, v: ops.causal_chunked(q, k, v), q, k, v),
               "chunked C=T": fwd_bwd(lambda q, k, v: ops.causal_chunked(q, k, v, chunk_size=T), q, k, v)}
        rows.append(tune_row(T, fns, a.tune_repeats, 2))
    chunk_rows = []
    for T in a.tune_long:
        q, k, v = inputs(T)
        fns = {f"C={C}": fwd_bwd(lambda q, k, v, C=C: ops.causal_chunked(q, k, v, chunk_size=C), q, k, v)
               for C in a.tune_chunks if C <= T}
        chunk_rows.append(tune_row(T, fns, a.tune_repeats, 1))
    return {"quadratic_vs_chunked": rows, "chunk_sizes": chunk_rows,
            "current": {"QUADRATIC_MAX_LEN": ops.QUADRATIC_MAX_LEN, "DEFAULT_CHUNK_SIZE": ops.DEFAULT_CHUNK_SIZE}}


# ------------------------------------------------------------------ layer: time and memory
def part_layer(a):
    mods = layer_modules(a)
    rows = []
    for T in a.lengths:
        x = torch.randn(T, 1, a.dim, requires_grad=True)
        grad = torch.randn(T, 1, a.dim)
        mask = causal_mask(T)
        fns = {n: (lambda m=m: layer_step(m, x, mask, grad)) for n, m in mods.items()}
        for f in fns.values():  # warm-up
            f()
        reps = a.repeats if T < 8192 else max(2, a.repeats - 2)
        t = interleaved(fns, reps)
        ms = {n: 1000 * statistics.median(v) for n, v in t.items()}
        row = {"length": T, "ms": ms, "runs_ms": {n: [1000 * s for s in v] for n, v in t.items()},
               "speedup": ms["softmax"] / ms["t2r"]}
        if a.states:
            row["over_additive"] = {n: ms[n] / ms["t2r"] for n in mods if n not in ("softmax", "t2r")}
        if T in a.mem_lengths:
            row["peak_MB"] = {n: measure_memory(n, T, a) for n in mods}
            row["softmax_mask_MB"] = T * T * 4 / 2**20
            row["memory_ratio"] = row["peak_MB"]["t2r"] / row["peak_MB"]["softmax"]
            row["memory_ratio_with_mask"] = row["peak_MB"]["t2r"] / (row["peak_MB"]["softmax"] + row["softmax_mask_MB"])
        rows.append(row)
        mem = ""
        if "peak_MB" in row:
            mem = (f" | step peak MB: softmax {row['peak_MB']['softmax']:.0f} (+ mask {row['softmax_mask_MB']:.0f}), "
                   f"t2r {row['peak_MB']['t2r']:.0f}")
        print(f"layer T={T:>5}: softmax {ms['softmax']:8.1f} ms, t2r {ms['t2r']:7.1f} ms, "
              f"{row['speedup']:5.2f}x{mem}", flush=True)
        if row.get("over_additive"):
            print("  state / additive t2r: " + ", ".join(f"{n} {ms[n]:.1f} ms {x:.2f}x" for n, x in
                                                       row["over_additive"].items()), flush=True)
    return rows


def measure_memory(name, T, a):
    """Peak RSS increase (MB) of one fwd + bwd step, in a fresh subprocess."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # every tensor its own mapping: RSS follows live tensors
    cmd = [sys.executable, "-m", "benchmarks.training", "--_memory-child", name, str(T),
           "--dim", str(a.dim), "--heads", str(a.heads), "--feature-dim", str(a.feature_dim),
           "--threads", str(a.threads)]
    if a.states:
        cmd += ["--states", ",".join(r.spelling() for r in a.states)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("PEAK_MB ")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"memory child failed: {res.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def memory_child(name, T, a):
    torch.set_num_threads(a.threads)
    mod = layer_modules(a)[name]
    xw = torch.randn(256, 1, a.dim, requires_grad=True)
    layer_step(mod, xw, causal_mask(256), torch.randn(256, 1, a.dim))  # warm-up: thread pools, kernels
    mod.zero_grad(set_to_none=False)  # gradient buffers exist before the measured step
    del xw
    x = torch.randn(T, 1, a.dim, requires_grad=True)
    grad = torch.randn(T, 1, a.dim)
    mask = causal_mask(T)
    rss0 = _status_kb("VmRSS")
    _reset_peak()
    layer_step(mod, x, mask, grad)
    print(f"PEAK_MB {(_status_kb('VmHWM') - rss0) / 1024:.2f}")


def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux: clear_refs 5), so the
    peak read after the step is the step's, not the imports'."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# ------------------------------------------------------------------ lm: the whole model
def part_lm(a):
    import copy

    from benchmarks import lm_models

    cfg = argparse.Namespace(layers=a.layers, dim=a.dim, heads=a.heads, ffn=a.ffn, feature_map="t2r",
                             feature_dim=a.feature_dim)
    d = make_dictionary(a.vocab)
    task = FakeTask(d)
    soft = lm_models.build("transformer_lm", task, cfg, a.lm_len + 8).train()
    t2r = lm_models.build("t2r_transformer_lm", task, cfg, a.lm_len + 8).train()
    t2r.load_state_dict(copy.deepcopy(soft.state_dict()))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(d.nspecial, len(d), (1, a.lm_len + 1), generator=g)
    inp, target = tokens[:, :-1], tokens[:, 1:]

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            logits, _ = model.decoder(inp)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), target.reshape(-1))
            loss.backward()
        return run

    fns = {"softmax": step(soft), "t2r": step(t2r)}
    for f in fns.values():
        f()
    t = interleaved(fns, a.lm_repeats)
    ms = {n: 1000 * statistics.median(v) for n, v in t.items()}
    row = {"length": a.lm_len, "ms": ms, "runs_ms": {n: [1000 * s for s in v] for n, v in t.items()},
           "speedup": ms["softmax"] / ms["t2r"]}
    print(f"lm T={a.lm_len}: softmax {ms['softmax']:.0f} ms, t2r {ms['t2r']:.0f} ms per fwd+bwd, "
          f"{row['speedup']:.2f}x", flush=True)
    return row
