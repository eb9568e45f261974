#!/usr/bin/env python
"""Generation speed and state memory: softmax ``transformer_lm`` vs its T2R twin.

Both models have the same size and the same weights for every shared tensor (the softmax state
dict is loaded into the T2R model, whose checkpoint hook fills the new feature-map tensors).
For each context length the incremental state is filled with ``ctx`` tokens, then single-token
decoding steps are timed exactly as fairseq's SequenceGenerator runs them:
``model.decoder(tokens, incremental_state=...)`` + ``get_normalized_probs(log_probs=True)``.

Filling the state ("prefill"): fairseq's TransformerDecoder keeps only the last token when it is
given an incremental_state, so the prefix is pushed through the decoder layers directly, in
parallel multi-token calls (chunks of ``--prefill-chunk`` tokens, one call for contexts up to
that size) with a causal mask. MultiheadAttention concatenates the chunk's keys/values to its
``prev_key``/``prev_value`` cache (B, H, T, D); T2RAttention continues its (S, z) sums. A check at
the start verifies that prefill + one step gives the same log-probs as a full parallel forward.

Long softmax contexts: a real prefill of the softmax model costs O(ctx^2) and minutes at 8192,
so above ``--softmax-prefill-max`` tokens its KV cache is synthesised instead: random
``prev_key``/``prev_value`` of exactly the shape, dtype and dict layout a real prefill leaves
(checked at start-up against a real prefill); a softmax step's cost depends on the cache's size,
not its values. T2R is always prefilled for real (linear in ctx).

Variants, all timed side by side in one process, interleaved per context and per repeat:
- ``softmax``: fairseq's transformer_lm (KV cache);
- ``t2r``: the T2R twin (merged projections: feature MLP folded into q/k proj);
- ``t2r_unmerged``: the same model and state with ``merge_projections = False``;
- ``floor_none``: the same model with every self-attention removed (returns its input at no
  cost; same embeddings, layer norms, FFNs, output projection): what a token costs without any
  attention at all;
- ``floor_proj``: the same, but the self-attention keeps the two matmuls any T2R step has to do
  (one fused projection to [phi(q) pre-activations | phi(k) pre-activations | v, 1] and out_proj)
  and nothing else: what stands above it is the recurrent state update and read-out and our
  Python.

The state updates other than the additive one are timed by ``lm_states.py`` (the ``--states``
sweep), on the measurement code here.

    python -m benchmarks.lm_generation            # default: 6 layers, 512 dims, contexts 128..8192
    python -m benchmarks.lm_generation --quick    # tiny model, contexts 16,64 (smoke test)
"""
import argparse
import json
import os
import statistics
import time

import torch

from benchmarks import lm_models, plots
from benchmarks.common import (
    add_model_options,
    clock,
    make_dictionary,
    set_up_torch,
)
from benchmarks.lm_measure import measure
from benchmarks.lm_models import build_models
from benchmarks.report import checked, reported, table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contexts", default="128,512,1024,2048,4096,8192", help="comma-separated context lengths")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=6)
    add_model_options(p)
    p.add_argument("--variants", default="softmax,t2r,t2r_unmerged,floor_proj,floor_none",
                   help="which models to time (see the module docstring)")
    p.add_argument("--steps", type=int, default=8, help="timed decoding steps per repeat")
    p.add_argument("--softmax-steps", type=int, default=4, help="timed steps per repeat for softmax at contexts "
                   "above --softmax-prefill-max (a step there costs up to ~1 s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each repeat")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--prefill-chunk", type=int, default=1024, help="tokens per parallel prefill call")
    p.add_argument("--softmax-prefill-max", type=int, default=1024,
                   help="above this context the softmax KV cache is synthesised (see the docstring)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: perf_counter (the figure to report); cpu: process CPU time, steadier on a "
                        "shared machine for comparing variants with --threads 1")
    p.add_argument("--quick", action="store_true", help="tiny model, contexts 16,64, few repeats (smoke test)")
    p.add_argument("--out", default=None,
                   help="output prefix for .json/.png (default benchmarks/results/lm_generation; --quick "
                        "writes nothing unless given)")
    return p


def parse_args(argv, p=None, out_name="lm_generation"):
    """The options of ``p`` (default build_parser()), with --quick's tiny model; ``a.contexts`` (sorted
    ints), ``a.variants`` (a list) and ``a.out`` (the output prefix, default
    benchmarks/results/OUT_NAME; None: write nothing) resolved. ``a.states``: None here (lm_states.py
    sets it)."""
    p = p or build_parser()
    a = p.parse_args(argv)
    a.states = getattr(a, "states", None)
    if a.quick:
        a.layers, a.dim, a.heads, a.ffn, a.vocab = 2, 64, 4, 128, 1000
        a.steps, a.softmax_steps, a.warmup, a.repeats = 4, 2, 1, 2
        if a.contexts == p.get_default("contexts"):
            a.contexts = "16,64"
        a.softmax_prefill_max = min(a.softmax_prefill_max, 16)
    if a.out is None and not a.quick:
        a.out = os.path.join(REPO, "benchmarks", "results", out_name)
    a.contexts = sorted(int(c) for c in a.contexts.split(","))
    a.variants = list(dict.fromkeys(v for v in a.variants.split(",") if v))
    return a


def set_up(a):
    """Clock, threads and seed as asked; returns the machine description (also printed)."""
    lm_models.CLOCK = clock(a.clock)  # the clock the timing loops read
    return set_up_torch(a)


def run_config(a, dictionary, models, counts, wall):
    n_soft, n_t2r = counts
    return {
        "layers": a.layers, "dim": a.dim, "heads": a.heads, "ffn": a.ffn, "vocab": len(dictionary),
        "feature_map": a.feature_map, "feature_dim": a.feature_dim, "batch": a.batch,
        "steps": a.steps, "softmax_steps_synthetic": a.softmax_steps, "warmup": a.warmup, "repeats": a.repeats,
        "prefill_chunk": a.prefill_chunk, "softmax_prefill_max": a.softmax_prefill_max,
        "variants": list(models), "dtype": "float32",
        "weights": "random (seed %d), shared tensors identical" % a.seed,
        "params_softmax": n_soft, "params_t2r": n_t2r,
        "timed": "model.decoder(tokens, incremental_state) + get_normalized_probs(log_probs=True) + argmax",
        "statistic": f"median over repeats x steps of per-step {a.clock} time",
        "clock": a.clock,
        "wall_s": wall,
    }


def save(result, a, plot_rows):
    """OUT.json and OUT.png (``a.out`` the prefix; ``plot_rows(rows, path, title)`` draws it)."""
    out, mach = a.out, result["machine"]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    title = (f"{a.layers}L/{a.dim}d/{a.heads}h LM, batch {a.batch}, fp32, {mach['cpu']} x{mach['threads']} threads, "
             f"torch {torch.__version__}; T2R k={a.feature_dim}")
    plot_rows(result["results"], out + ".png", title)
    print(f"\nwrote {out}.json and {out}.png")


def main(argv=None):
    return run(parse_args(argv))


def run(a, sweep=None):
    """Build, check, time, summarise and save (``a`` from parse_args). ``sweep``: the module adding
    the other state updates (lm_states.py: ``build_state_models``, ``summarize_states``, ``config``,
    ``plot_states``)."""
    mach = set_up(a)
    t_start = time.perf_counter()
    dictionary = make_dictionary(a.vocab)
    models, soft, t2r, counts = build_models(a, dictionary)
    states, skipped = sweep.build_state_models(a, dictionary, t2r) if sweep else ({}, {})
    models.update(states)
    checks, rows, flat = measure(models, soft, t2r, dictionary, a, states)
    wall = time.perf_counter() - t_start
    summary = summarize(rows, flat)
    if sweep:
        sweep.summarize_states(rows, summary)
    for line in summary["lines"]:
        print(line)
    print(f"measured in {wall:.0f} s", flush=True)
    result = {
        "benchmark": "lm_generation: per-token incremental decoding, softmax transformer_lm vs T2R twin and floors",
        "machine": mach,
        "config": {**run_config(a, dictionary, models, counts, wall), **(sweep.config(a, skipped) if sweep else {})},
        "prefill_check_max_abs_diff": checks,
        "summary": summary,
        "results": rows,
        "flatness": flat,
    }
    if a.out:
        save(result, a, sweep.plot_states if sweep else plots.lm_generation)
    return result


def summarize(rows, flat=None):
    """The figures the targets are stated in (see docs/results/speed.md)."""
    s = {"lines": []}
    have = lambda name: all(name in r["ms_per_token"] for r in rows)  # noqa: E731
    first, last = rows[0], rows[-1]
    if have("t2r"):
        across = last["ms_per_token"]["t2r"] / first["ms_per_token"]["t2r"]
        s["t2r_flatness_across_rows"] = {"from": first["context"], "to": last["context"], "ratio": across}
        s["lines"].append(f"T2R ms/token at {last['context']} / at {first['context']} (table rows): {across:.3f}")
    if flat:
        s["t2r_flatness"] = {"from": flat["contexts"][0], "to": flat["contexts"][1], "ratio": flat["ratio"]}
        s["lines"].append(f"T2R ms/token at {flat['contexts'][1]} / at {flat['contexts'][0]}, timed side by side: "
                          f"{flat['ratio']:.3f}")
    if have("softmax") and have("t2r"):
        s["speedup"] = {str(r["context"]): r["speedup"] for r in rows}
        s["lines"].append("softmax / T2R per token: " + ", ".join(f"{r['context']}: {r['speedup']:.1f}x" for r in rows))
        s["state_ratio_last"] = last["softmax_state_bytes"] / last["t2r_state_bytes"]
        s["t2r_state_constant"] = len({r["t2r_state_bytes"] for r in rows}) == 1
        s["lines"].append(f"state at {last['context']}: softmax {last['softmax_state_MB']:.1f} MB, T2R "
                          f"{last['t2r_state_MB']:.2f} MB (1/{s['state_ratio_last']:.0f}); T2R constant: {s['t2r_state_constant']}")
    for f in ("floor_none", "floor_proj"):
        if have("t2r") and have(f):
            worst = max(r[f"t2r_over_{f}"] for r in rows)
            s[f"t2r_over_{f}_max"] = worst
            s["lines"].append(f"T2R / {f}: " + ", ".join(f"{r[f't2r_over_{f}']:.3f}" for r in rows) + f" (max {worst:.3f})")
    if have("t2r") and have("t2r_unmerged"):
        s["merged_speedup"] = statistics.median(r["merged_speedup"] for r in rows)
        s["lines"].append(f"merged vs unmerged projections: {s['merged_speedup']:.3f}x per token (median over contexts)")
    return s


# ----------------------------------------------------------- the speed table's rows and section
# (run_all.py writes docs/results/speed.md from these and this script's JSON)
def targets(lm):
    by = {r["context"]: r for r in lm["results"]}
    s = lm.get("summary", {})
    return lm_flatness_rows(lm, by, s) + lm_speedup_rows(by) + lm_state_rows(by, s) + lm_floor_rows(by, s)


def lm_flatness_rows(lm, by, s):
    """T2R's time per token, longest context over shortest: side by side, and from the table's rows."""
    rows = []
    if "t2r_flatness" in s:
        f = s["t2r_flatness"]
        rows.append(checked("LM generation", f"T2R ms/token at {f['to']} / at {f['from']} (batch {lm['config']['batch']}; "
                            "the two contexts timed side by side)", f"{f['ratio']:.3f}", "<= 1.15", f["ratio"] <= 1.15))
    if "t2r_flatness_across_rows" in s:
        f = s["t2r_flatness_across_rows"]
        a, b = by[f["from"]]["ms_per_token"], by[f["to"]]["ms_per_token"]
        drift = f" (the attention-free floor moved {b['floor_none'] / a['floor_none']:.3f}x)" if "floor_none" in a else ""
        rows.append(reported("LM generation", f"same, from the table's rows (timed minutes apart){drift}",
                             f"{f['ratio']:.3f}"))
    return rows


def lm_speedup_rows(by):
    return [checked("LM generation", f"softmax / T2R time per token at {ctx}", f"{by[ctx]['speedup']:.1f}x",
                    f">= {need}x", by[ctx]["speedup"] >= need)
            for ctx, need in ((4096, 20), (8192, 35)) if ctx in by and "speedup" in by[ctx]]


def lm_state_rows(by, s):
    """T2R's state: the same size at every context, and a small fraction of softmax's KV cache."""
    if "t2r_state_constant" not in s:
        return []
    longest = max(by)
    last = by[longest]
    ratio = last["t2r_state_bytes"] / last["softmax_state_bytes"]
    return [checked("LM generation", "T2R incremental state bytes at every context",
                    f"{last['t2r_state_bytes']:,} B at each" if s["t2r_state_constant"] else "varies",
                    "constant", s["t2r_state_constant"]),
            checked("LM generation", f"T2R state / softmax KV cache at {longest}",
                    f"1/{1 / ratio:.0f} ({last['t2r_state_MB']:.2f} MB vs {last['softmax_state_MB']:.0f} MB)",
                    "<= 1/100", ratio <= 0.01)]


def lm_floor_rows(by, s):
    """T2R against the same model with attention removed or reduced to its projections; merged projections."""
    rows = []
    if "t2r_over_floor_none_max" in s:
        v = s["t2r_over_floor_none_max"]
        rows.append(checked("LM generation", "T2R / same model with attention removed, per token (max over contexts)",
                            f"{v:.3f}", "<= 1.10", v <= 1.10))
    if all("floor_proj" in r["ms_per_token"] and "floor_none" in r["ms_per_token"] for r in by.values()):
        # what limits the row above: the matmuls a T2R step cannot avoid, without any state
        v = min(r["ms_per_token"]["floor_proj"] / r["ms_per_token"]["floor_none"] for r in by.values())
        rows.append(reported("LM generation", "its limit: attention reduced to its two projections / attention removed "
                             "(min over contexts)", f"{v:.3f}"))
    if "t2r_over_floor_proj_max" in s:
        rows.append(reported("LM generation", "T2R / attention reduced to its two projections (max over contexts)",
                             f"{s['t2r_over_floor_proj_max']:.3f}"))
    if "merged_speedup" in s:
        rows.append(reported("LM generation", "merged vs unmerged projections, per token (median over contexts)",
                             f"{s['merged_speedup']:.3f}x"))
    return rows


def section(lm):
    c = lm["config"]
    lines = ["", "## LM generation (ms per token)", "",
             f"{c['layers']} layers, {c['dim']} dims, {c['heads']} heads, FFN {c['ffn']}, vocab {c['vocab']}, "
             f"T2R k={c['feature_dim']}, batch {c['batch']}, fp32, {c.get('clock', 'wall')} clock. Softmax's KV "
             f"cache is synthesised above {c.get('softmax_prefill_max')} tokens (see the script).", ""]
    variants = c.get("variants", ["softmax", "t2r"])
    head = ["context"] + variants + ["softmax / T2R", "softmax state MB", "T2R state MB"]
    rows = [[r["context"]] + [f"{r['ms_per_token'][v]:.2f}" for v in variants]
            + [f"{r.get('speedup', float('nan')):.1f}x", f"{r['softmax_state_MB']:.1f}", f"{r['t2r_state_MB']:.2f}"]
            for r in lm["results"]]
    return lines + table(rows, head) + ["", "![lm_generation](../../benchmarks/results/lm_generation.png)"]


if __name__ == "__main__":
    main()
