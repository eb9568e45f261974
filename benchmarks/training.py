#!/usr/bin/env python
"""Training speed and memory: one attention layer and the whole LM, forward + backward, fp32 CPU.

Three parts, each timed side by side in one process (variants interleaved per length and per
repeat, the order alternating), medians reported:

- ``tune``: the attention core alone (``ops`` functions on given features, fwd + bwd): the
  quadratic form against the chunked form (chunks of ``DEFAULT_CHUNK_SIZE``, and one chunk of
  the whole length) for short lengths (where ``QUADRATIC_MAX_LEN`` should
  sit) and chunk sizes for long ones (``DEFAULT_CHUNK_SIZE``).
- ``layer``: one ``T2RAttention`` against fairseq's ``MultiheadAttention`` (512 dims, 8 heads,
  feature size 32, batch 1), called as fairseq's decoder layer calls them in training:
  ``attn(x, x, x, attn_mask=<causal float mask>, need_weights=False)`` (fairseq's MHA then runs
  PyTorch's ``F.multi_head_attention_forward``, i.e. ``scaled_dot_product_attention``), then
  ``out.backward(g)`` with g allocated beforehand (no loss function's temporaries). Peak memory is measured for each (module, length) in a fresh subprocess:
  a warm-up step at 256 tokens, then the peak RSS increase over one fwd + bwd step (the kernel's
  VmHWM, reset just before the step, minus the RSS then; glibc's mmap threshold is fixed at
  64 KB so that every tensor is its own mapping and RSS follows the live tensors exactly). The causal mask softmax needs (T x T fp32, built by
  fairseq's decoder and cached there) is allocated before the step, so it is *not* in softmax's
  step figure; it is reported beside it.
  With ``--states additive,decay,gate[,delta,gated-delta]`` the layer part also times one
  ``T2RAttention`` per state update (``state_options``, the same weights: same seed), side by side
  with the rest; a state the module refuses is skipped and the reason recorded; parts default to
  ``layer``, memory to none, the output to benchmarks/results/states_training.*. ``gate-feature``
  is the gate state with one gate per feature (``gate_shape="feature"``, GLA) instead of per head.
- ``lm``: the whole 6-layer LM (``transformer_lm`` vs its ``t2r_transformer_lm`` twin, same
  weights), one sequence of ``--lm-len`` tokens, cross-entropy over the vocabulary, fwd + bwd.

    python -m benchmarks.training                 # everything (~6 min on 2 quiet cores)
    python -m benchmarks.training --quick         # smoke test (small lengths, < 1 min)
    python -m benchmarks.training --parts layer --lengths 1024,4096
    python -m benchmarks.training --states additive,decay,gate --lengths 1024,4096,8192
"""
import argparse
import json
import os
import time

import torch

from benchmarks import plots, training_parts
from benchmarks.common import clock, machine, parse_states
from benchmarks.report import checked, table
from benchmarks.training_parts import memory_child, part_layer, part_lm, part_tune, state_layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="tune,layer,lm")
    p.add_argument("--lengths", default="256,512,1024,2048,4096,8192", help="layer sequence lengths")
    p.add_argument("--mem-lengths", default="1024,4096,8192", help="layer lengths whose peak memory is measured")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--lm-len", type=int, default=4096)
    p.add_argument("--lm-repeats", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tune-short", default="32,64,128,256,512")
    p.add_argument("--tune-long", default="1024,4096")
    p.add_argument("--tune-chunks", default="32,64,128,256")
    p.add_argument("--tune-repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: perf_counter (the figure to report); cpu: process CPU time, steadier on a "
                        "shared machine for comparing variants with --threads 1")
    p.add_argument("--quick", action="store_true", help="small lengths and model, few repeats (< 1 min)")
    p.add_argument("--out", default=None, help="output prefix (default benchmarks/results/training, with "
                   "--states benchmarks/results/states_training; --quick writes nothing unless given)")
    p.add_argument("--states", default=None,
                   help="comma-separated state updates STATE[:NORM][@W] (additive, decay, gate, gate-feature, delta, "
                        "gated-delta; norm default rms for delta and gated-delta, else sum; @W with a W-token softmax "
                        "window, window-only@W the window alone): the layer part times one "
                        "T2RAttention per state beside the additive one")
    p.add_argument("--_memory-child", nargs=2, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv):
    """The options, with --quick's small sizes; the length lists as ints, ``a.mem_lengths`` a set,
    ``a.parts`` a list and ``a.out`` the output prefix (None: write nothing)."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.states is not None:
        a.states = parse_states(a.states)
    if a._memory_child:
        return a
    if a.states:
        a.parts = "layer" if a.parts == p.get_default("parts") else a.parts
        a.mem_lengths = "" if a.mem_lengths == p.get_default("mem_lengths") else a.mem_lengths
    if a.quick:
        a.lengths, a.mem_lengths, a.repeats = "256,1024", "1024", 2
        a.layers, a.ffn, a.vocab, a.lm_len, a.lm_repeats = 2, 512, 1000, 256, 2
        a.tune_short, a.tune_long, a.tune_chunks, a.tune_repeats = "64,256", "512", "32,64", 3
    a.lengths, a.mem_lengths = ints(a.lengths), set(ints(a.mem_lengths))
    a.tune_short, a.tune_long, a.tune_chunks = ints(a.tune_short), ints(a.tune_long), ints(a.tune_chunks)
    if a.out is None and not a.quick:
        a.out = os.path.join(REPO, "benchmarks", "results", "states_training" if a.states else "training")
    a.parts = [x for x in a.parts.split(",") if x]
    return a


def set_up(a):
    """Clock and threads as asked; returns the machine description (also printed)."""
    training_parts.CLOCK = clock(a.clock)  # the clock the timing loops read
    torch.set_num_threads(a.threads)
    mach = machine()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {mach['cpu']}", flush=True)
    return mach


def run_config(a):
    return {"dim": a.dim, "heads": a.heads, "feature_dim": a.feature_dim, "layers": a.layers,
            "ffn": a.ffn, "vocab": a.vocab, "batch": 1, "dtype": "float32", "repeats": a.repeats,
            "layer_call": "attn(x, x, x, attn_mask=causal float mask, need_weights=False); "
                          "out.backward(g) with g allocated beforehand",
            "memory": "peak RSS increase over one fwd+bwd step in a fresh subprocess after a "
                      "256-token warm-up; softmax's causal mask allocated before the step",
            "statistic": f"median {a.clock} time over interleaved repeats", "clock": a.clock,
            **({"states": [r.record() for r in a.states],
                "states_skipped": state_layers(a)[1]} if a.states else {})}


def summarize_states(layer):
    """{variant: {"by_length": {T: ratio}, "max": worst}}: each state's fwd + bwd time over the
    additive t2r's (timed side by side); printed."""
    out = {}
    for n in layer[0].get("over_additive", {}):
        by_len = {str(r["length"]): r["over_additive"][n] for r in layer}
        out[n] = {"by_length": by_len, "max": max(by_len.values())}
        print(f"{n} / t2r (additive), layer fwd+bwd: " + ", ".join(f"{T}: {x:.3f}" for T, x in by_len.items())
              + f" (max {out[n]['max']:.3f}; target <= 1.5)", flush=True)
    return out


def save(result, out):
    """OUT.json, and OUT.png when there is a layer part to plot."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    wrote = [out + ".json"]
    if plots.training(result, out + ".png"):
        wrote.append(out + ".png")
    print("wrote " + ", ".join(wrote))


def main(argv=None):
    a = parse_args(argv)
    if a._memory_child:
        return memory_child(a._memory_child[0], int(a._memory_child[1]), a)
    mach = set_up(a)
    t0 = time.perf_counter()
    result = {"benchmark": "training: attention layer and whole LM, forward + backward, fp32 CPU",
              "machine": mach, "config": run_config(a)}
    for n, why in result["config"].get("states_skipped", {}).items():
        print(f"{n} skipped: {why}", flush=True)
    with torch.enable_grad():
        for name, part in (("tune", part_tune), ("layer", part_layer), ("lm", part_lm)):
            if name in a.parts:
                result[name] = part(a)
    if a.states and result.get("layer"):
        result["states_over_additive"] = summarize_states(result["layer"])
    result["config"]["wall_s"] = time.perf_counter() - t0
    print(f"measured in {result['config']['wall_s']:.0f} s", flush=True)
    if a.out:
        save(result, a.out)
    return result


# ----------------------------------------------------------- the speed table's rows and section
# (run_all.py writes docs/results/speed.md from these and this script's JSON)
def targets(tr):
    layer = {r["length"]: r for r in tr.get("layer", [])}
    rows = [checked("training", f"attention layer fwd+bwd, softmax / T2R at {T}", f"{layer[T]['speedup']:.2f}x",
                    f">= {need}x", layer[T]["speedup"] >= need)
            for T, need in ((1024, 1.5), (4096, 4), (8192, 8)) if T in layer]
    rows += training_memory_rows(tr)
    if "lm" in tr:
        sp = tr["lm"]["speedup"]
        rows.append(checked("training", f"whole {tr['config']['layers']}-layer LM fwd+bwd at {tr['lm']['length']}",
                            f"{sp:.2f}x", ">= 2x", sp >= 2))
    return rows


def training_memory_rows(tr):
    """Peak memory of one layer step at the longest length measured, T2R over softmax."""
    big = max((r for r in tr.get("layer", []) if "peak_MB" in r), key=lambda r: r["length"], default=None)
    if not big:
        return []
    pm = big["peak_MB"]
    return [checked("training", f"layer step peak memory T2R / softmax at {big['length']} (step only)",
                    f"{big['memory_ratio']:.2f} ({pm['t2r']:.0f} MB vs {pm['softmax']:.0f} MB)", "<= 0.25",
                    big["memory_ratio"] <= 0.25),
            checked("training", f"same, softmax's causal mask ({big['softmax_mask_MB']:.0f} MB) counted",
                    f"{big['memory_ratio_with_mask']:.2f}", "<= 0.25", big["memory_ratio_with_mask"] <= 0.25)]


def section(tr):
    c = tr["config"]
    lines = training_layer_section(tr) if tr.get("layer") else []
    if tr.get("lm"):
        r = tr["lm"]
        lines += ["", f"Whole LM ({c['layers']} layers, vocab {c['vocab']}), one sequence of {r['length']} tokens, "
                      f"fwd + bwd: softmax {r['ms']['softmax']:.0f} ms, T2R {r['ms']['t2r']:.0f} ms, "
                      f"{r['speedup']:.2f}x."]
    if tr.get("tune"):
        lines += tune_section(tr["tune"])
    return lines


def training_layer_section(tr):
    c = tr["config"]
    lines = ["", "## Training: one attention layer, forward + backward", "",
             f"{c['dim']} dims, {c['heads']} heads, T2R k={c['feature_dim']}, batch 1, fp32. {c['layer_call']}. "
             f"Memory: {c['memory']}.", ""]
    rows = []
    for r in tr["layer"]:
        pm = r.get("peak_MB", {})
        rows.append([r["length"], f"{r['ms']['softmax']:.1f}", f"{r['ms']['t2r']:.1f}", f"{r['speedup']:.2f}x",
                     f"{pm['softmax']:.0f} (+{r['softmax_mask_MB']:.0f} mask)" if pm else "",
                     f"{pm['t2r']:.0f}" if pm else ""])
    lines += table(rows, ["length", "softmax ms", "T2R ms", "speedup", "softmax peak MB", "T2R peak MB"])
    return lines + ["", "![training](../../benchmarks/results/training.png)"]


def tune_column(n):
    """Older runs named the chunked column by its chunk size."""
    return "chunked" if n.startswith("chunked C=") and n != "chunked C=T" else n


def tune_section(t):
    """The quadratic vs chunked timings, the chunk-size sweep, and the thresholds in force."""
    lines = ["", "### Quadratic vs chunked form, chunk size (attention core alone, fwd + bwd, ms)", ""]
    qrows = [{"length": r["length"], "ms": {tune_column(n): v for n, v in r["ms"].items()}} for r in t["quadratic_vs_chunked"]]
    names = list(dict.fromkeys(n for r in qrows for n in r["ms"]))
    lines += table([[r["length"]] + [f"{r['ms'][n]:.2f}" if n in r["ms"] else "" for n in names] for r in qrows],
                   ["length"] + [n if n != "chunked" else f"chunked C=min(T, {t['current']['DEFAULT_CHUNK_SIZE']})"
                                 for n in names])
    if t["chunk_sizes"]:
        names = sorted({n for r in t["chunk_sizes"] for n in r["ms"]}, key=lambda n: int(n[2:]))
        lines += [""] + table([[r["length"]] + [f"{r['ms'][n]:.1f}" if n in r["ms"] else "" for n in names]
                               for r in t["chunk_sizes"]], ["length"] + names)
    return lines + ["", f"In force: QUADRATIC_MAX_LEN = {t['current']['QUADRATIC_MAX_LEN']}, "
                        f"DEFAULT_CHUNK_SIZE = {t['current']['DEFAULT_CHUNK_SIZE']}."]


if __name__ == "__main__":
    main()
