"""lm_generation.py's measurement: the prefill checks, each context's states and interleaved
timings, its row of the table, and T2R's flatness timed side by side."""
import statistics
import time

import torch

from benchmarks.common import state_bytes
from benchmarks.lm_models import check_prefill, describe_state, prefill, set_merge, synthetic_softmax_state, time_steps

STATEFUL = {"softmax": "softmax", "t2r": "t2r", "t2r_unmerged": "t2r"}  # variant -> whose state it uses


def check_prefills(sources, dictionary):
    """Prefill + one step == the full forward for every model of ``sources`` ({name: model},
    softmax first), and the synthetic softmax cache has a real prefill's layout: {model: max
    |log-prob diff|} (also printed)."""
    soft = sources["softmax"]
    probe = torch.randint(dictionary.nspecial, len(dictionary), (2, 33))
    checks = {name: check_prefill(m, probe, chunk=8) for name, m in sources.items()}
    real = {}
    prefill(soft.decoder, probe[:, :9], real, 8)
    synth_ok = describe_state(real) == describe_state(synthetic_softmax_state(soft, 2, 9))
    assert synth_ok, "synthetic softmax cache differs from a real prefill's"
    print("prefill check (max |log-prob diff| vs full forward): "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
          + "; synthetic softmax cache has the real one's layout", flush=True)
    return checks


def prefill_states(sources, models, tokens, ctx, a):
    """The state of each model in ``sources`` ({name: model}) that a timed variant reads, filled with
    the first ``ctx`` of ``tokens`` (B, >ctx): ({name: state}, {name: bytes}, {name: seconds}). The
    softmax cache above --softmax-prefill-max is synthesised (see the module docstring)."""
    base, nbytes, prefill_s = {}, {}, {}
    for name, m in sources.items():
        if not any(STATEFUL.get(v, v) == name for v in models):
            continue
        t0 = time.perf_counter()
        if name == "softmax" and ctx > a.softmax_prefill_max:
            base[name] = synthetic_softmax_state(m, a.batch, ctx)
        else:
            base[name] = {}
            prefill(m.decoder, tokens[:, :ctx], base[name], a.prefill_chunk)
        prefill_s[name] = time.perf_counter() - t0
        nbytes[name] = state_bytes(base[name])
    return base, nbytes, prefill_s


def time_variants(models, t2r, base, tokens, ctx, a):
    """{variant: [seconds per step]}: every variant's steps from its state in ``base``, the variants
    interleaved per repeat, the order alternating."""
    times = {n: [] for n in models}
    for r in range(a.repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in order:
            steps = a.softmax_steps if name == "softmax" and ctx > a.softmax_prefill_max else a.steps
            set_merge(t2r, name != "t2r_unmerged")
            st = base.get(STATEFUL.get(name, name))
            times[name] += time_steps(models[name], tokens, st, ctx, steps, a.warmup)
    set_merge(t2r, True)
    return times


def context_row(ctx, times, nbytes, prefill_s, a):
    """The table's row of one context: medians, state sizes, ratios."""
    ms = {n: 1000 * statistics.median(t) for n, t in times.items()}
    row = {
        "context": ctx,
        "ms_per_token": ms,
        "softmax_state_MB": nbytes.get("softmax", 0) / 2**20,
        "t2r_state_MB": nbytes.get("t2r", 0) / 2**20,
        "softmax_state_bytes": nbytes.get("softmax"),
        "t2r_state_bytes": nbytes.get("t2r"),
        "softmax_cache": "synthetic" if ctx > a.softmax_prefill_max else "prefilled",
        "prefill_s": prefill_s,
        "step_ms": {n: [1000 * t for t in ts] for n, ts in times.items()},
    }
    if "softmax" in ms and "t2r" in ms:
        row["speedup"] = ms["softmax"] / ms["t2r"]
    if "t2r" in ms:
        for f in ("floor_none", "floor_proj"):
            if f in ms:
                row[f"t2r_over_{f}"] = ms["t2r"] / ms[f]
        if "t2r_unmerged" in ms:
            row["merged_speedup"] = ms["t2r_unmerged"] / ms["t2r"]
    states = [r.variant for r in a.states[1:] if r.variant in ms] if a.states else []
    if states:
        row["state_bytes"] = {v: nbytes.get(v) for v in ["t2r"] + states}
        row["over_additive"] = {v: ms[v] / ms["t2r"] for v in states}
    return row


def measure_context(models, sources, dictionary, ctx, a, kept):
    """Prefill, time and print one context's row; keeps T2R's (tokens, state) at the first and the
    last context in ``kept`` for flatness()."""
    tokens = torch.full((a.batch, ctx + a.warmup + a.steps + 1), dictionary.pad(), dtype=torch.long)
    tokens[:, :ctx] = torch.randint(dictionary.nspecial, len(dictionary), (a.batch, ctx))
    base, nbytes, prefill_s = prefill_states(sources, models, tokens, ctx, a)
    if "t2r" in base and ctx in (a.contexts[0], a.contexts[-1]):
        kept[ctx] = (tokens, base["t2r"])  # 3 MB each
    row = context_row(ctx, time_variants(models, sources["t2r"], base, tokens, ctx, a), nbytes, prefill_s, a)
    cells = " ".join(f"{row['ms_per_token'][v]:>{max(13, len(v))}.2f}" for v in models)
    # a --states run times no softmax model: its cache is not measured (not 0 MB)
    soft = "-" if row["softmax_state_bytes"] is None else f"{row['softmax_state_MB']:.2f}"
    print(f"{ctx:>8} {cells}  {soft:>21} {row['t2r_state_MB']:>7.2f}", flush=True)
    return row


def measure(models, soft, t2r, dictionary, a, states=None):
    """The checks, the table's rows and T2R's flatness (None with one context or without T2R);
    ``states``: {variant: model} of the other state updates."""
    sources = {"softmax": soft, "t2r": t2r, **(states or {})}
    with torch.no_grad():
        checks = check_prefills(sources, dictionary)
        header = " ".join(f"{v:>{max(13, len(v))}}" for v in models)
        print(f"\n{'context':>8} {header}  (ms/token)  {'softmax MB':>10} {'t2r MB':>7}", flush=True)
        kept = {}  # context -> (tokens, T2R state as prefilled), first and last context
        rows = [measure_context(models, sources, dictionary, ctx, a, kept) for ctx in a.contexts]
        flat = None
        if "t2r" in models and len(a.contexts) > 1:
            flat = flatness(t2r, kept, a)
            print(f"T2R side by side, contexts interleaved: {flat['ms'][0]:.2f} ms at {flat['contexts'][0]}, "
                  f"{flat['ms'][1]:.2f} ms at {flat['contexts'][1]}", flush=True)
    return checks, rows, flat


def flatness(t2r, kept, a):
    """T2R's time per token at the shortest and the longest context, timed side by side: the two
    states the table's rows prefilled (``kept``: context -> (tokens, state)), interleaved per repeat
    (the order alternating), so that the machine's drift between the rows (minutes apart) stays out
    of the ratio."""
    short, long = sorted(kept)
    times = {short: [], long: []}
    for r in range(a.repeats):
        for ctx in ((short, long) if r % 2 == 0 else (long, short)):
            tokens, state = kept[ctx]
            times[ctx] += time_steps(t2r, tokens, state, ctx, a.steps, a.warmup)
    ms = [1000 * statistics.median(times[c]) for c in (short, long)]
    return {"contexts": [short, long], "ms": ms, "ratio": ms[1] / ms[0],
            "step_ms": {str(c): [1000 * t for t in times[c]] for c in (short, long)}}
