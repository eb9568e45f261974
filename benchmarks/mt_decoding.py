#!/usr/bin/env python
"""Translation decoding speed: softmax ``transformer`` vs its ``t2r_transformer`` twin.

Both models have the same size and the same weights for every shared tensor (the softmax state
dict is loaded into the T2R model, whose checkpoint hook adds only the feature maps). Each point
runs fairseq's own ``SequenceGenerator`` (what fairseq-generate / -interactive use: encoder,
beam search, state reordering, finished-hypothesis bookkeeping) on random source sentences of
``src`` tokens, with the output length forced to ``tgt`` tokens (min_len = max_len = tgt, so
every hypothesis makes tgt + 1 decoder steps, the last one emitting eos).

Softmax decoder steps grow with the target prefix (self-attention KV cache) and with the source
length (cross-attention over all encoder states); T2R steps do neither (S, z and the source
summary S_src, z_src are fixed-size). The encoder is softmax in both and is timed separately.

Translation models convert the decoder's self-attention and keep softmax cross-attention by
default (``--t2r-cross softmax``); this benchmark times both T2R twins side by side with the
teacher: ``t2r`` (``--t2r-cross linear``: self- and cross-attention linear, the key kept from the
earlier results) and ``t2r_softmax_cross`` (the default: a softmax cross-attention step reads the
encoder's cached keys/values, O(source), constant in the target length). ``--t2r-cross linear``
times only the former.

Two sweeps, side by side in one run: source lengths at a fixed target length, and target lengths
at a fixed source length (default: beam 4, sources 64 / 512 / 2048 tokens with 256-token outputs,
and outputs 64 / 256 for 512-token sources). Softmax and T2R are interleaved per point and per
repeat (the order alternates) because the machine may be shared; medians are reported. Each row
also gives the decoder's time per step, (generate - encoder) / (tgt + 1), the figure that should
not depend on the source length for T2R.

    python -m benchmarks.mt_decoding            # 6+6 layers, 512 dims, 8 heads, FFN 2048, vocab 10k
    python -m benchmarks.mt_decoding --quick    # tiny model, lengths 32,128 (smoke test)
    python -m benchmarks.mt_decoding --contexts 128,1024 ...  # + source = target length points

``--contexts L,...``: per L, L decoder steps timed directly on an L-token source (the whole
translation of an L-token sentence: ms per token averaged over it) and the incremental state's
bytes at its end, for every model.
"""
import argparse
import json
import os
import shlex
import sys
import time

import torch

from benchmarks import mt_measure, plots
from benchmarks.common import add_model_options, clock, make_dictionary, set_up_torch
from benchmarks.mt_measure import (
    LABELS,
    build_twins,
    context_rows,
    direct_step_rows,
    generate_rows,
    parse_lengths,
    sweep_points,
)
from benchmarks.report import checked, reported, table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src-lens", default="64,512,2048", help="source lengths of the source sweep")
    p.add_argument("--tgt-lens", default="64,256", help="target lengths of the target sweep")
    p.add_argument("--fixed-tgt", type=int, default=256, help="target length during the source sweep")
    p.add_argument("--fixed-src", type=int, default=512, help="source length during the target sweep")
    p.add_argument("--beams", default="4")
    p.add_argument("--batch", type=int, default=1, help="source sentences per generate call (both sweeps)")
    p.add_argument("--batched", default="8", help="batch sizes at which the target point (--fixed-src, "
                   "--fixed-tgt) is also measured: fairseq-generate decodes many sentences per call")
    p.add_argument("--batched-repeats", type=int, default=2, help="repeats of the batched points (a softmax "
                   "run at batch 8 takes about a minute)")
    p.add_argument("--t2r-cross", default="linear,softmax", choices=["linear,softmax", "linear"],
                   help="the T2R twins' cross-attention: both side by side (default) or linear only")
    p.add_argument("--contexts", default="", help="source = target lengths L timed directly: L decoder steps "
                   "on an L-token source, ms/token and state bytes (default: none)")
    p.add_argument("--enc-layers", type=int, default=6)
    p.add_argument("--dec-layers", type=int, default=6)
    add_model_options(p)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads (default: all cores; on a machine shared with other jobs use 1: "
                        "2 threads then ran 10-40x slower than 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-count", type=int, default=64, help="decoder steps timed directly per source length")
    p.add_argument("--warmup-steps", type=int, default=4)
    p.add_argument("--step-repeats", type=int, default=5, help="repeats of the directly timed decoder steps")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: perf_counter (the figure to report); cpu: process CPU time, steadier on a "
                        "shared machine for comparing the models with --threads 1")
    p.add_argument("--quick", action="store_true", help="tiny model, lengths 32,128, one repeat (smoke test)")
    p.add_argument("--out", default=None, help="output prefix for .json/.png (default "
                   "benchmarks/results/mt_decoding; --quick: benchmarks/results/mt_decoding_quick)")
    return p


def parse_args(argv):
    """The options, with --quick's tiny model and lengths where the lengths were left at their defaults."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.quick:
        a.enc_layers, a.dec_layers, a.dim, a.heads, a.ffn, a.vocab, a.repeats = 2, 2, 64, 4, 128, 1000, 1
        if a.src_lens == p.get_default("src_lens"):
            a.src_lens = "32,128"
        if a.tgt_lens == p.get_default("tgt_lens"):
            a.tgt_lens = "16"
        if a.batched == p.get_default("batched"):
            a.batched = "2"
        a.batched_repeats = 1
        a.fixed_src, a.fixed_tgt = min(a.fixed_src, 32), min(a.fixed_tgt, 32)
        a.step_count, a.warmup_steps, a.step_repeats = 8, 1, 1
    return a


def set_up(a):
    """Clock, threads and seed as asked; returns the machine description (also printed)."""
    mt_measure.CLOCK = clock(a.clock)  # the clock the timing loops read
    return set_up_torch(a)


def run_config(a, dictionary, n_soft, n_t2r, wall):
    """The result file's "config": what was measured, and how."""
    return {
        "enc_layers": a.enc_layers, "dec_layers": a.dec_layers, "dim": a.dim, "heads": a.heads,
        "ffn": a.ffn, "vocab": len(dictionary), "feature_map": a.feature_map,
        "feature_dim": a.feature_dim, "batch": a.batch, "beams": a.beams, "repeats": a.repeats,
        "batched": parse_lengths(a.batched), "batched_repeats": a.batched_repeats,
        "fixed_src": a.fixed_src, "fixed_tgt": a.fixed_tgt, "dtype": "float32",
        "weights": f"random (seed {a.seed}), shared tensors identical",
        "params_softmax": n_soft, "params_t2r": n_t2r,
        "timed": "SequenceGenerator.generate (encoder + tgt+1 decoder steps + beam bookkeeping), "
                 "min_len = max_len = tgt",
        "statistic": f"median over repeats of {a.clock} time; ms_per_token = generate time / tgt",
        "clock": a.clock, "step_count": a.step_count, "step_repeats": a.step_repeats,
        "t2r_cross": a.t2r_cross, "contexts": parse_lengths(a.contexts),
        "wall_s": wall,
    }


def save(result, a, out):
    """OUT.json, and OUT.png where matplotlib is installed."""
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}.json")
    try:
        mach = result["machine"]
        title = (f"{a.enc_layers}+{a.dec_layers}L/{a.dim}d/{a.heads}h translation model, batch {a.batch}, fp32, "
                 f"{mach['cpu']} x{mach['threads']} threads, torch {torch.__version__}; T2R k={a.feature_dim}")
        plots.mt_decoding(result["results"], a, out + ".png", title)
        print(f"wrote {out}.png")
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")


def main(argv=None):
    a = parse_args(argv)
    out = a.out or os.path.join(REPO, "benchmarks", "results", "mt_decoding" + ("_quick" if a.quick else ""))
    a.beams = [int(b) for b in a.beams.split(",")]
    points = sweep_points(a)
    mach = set_up(a)
    dictionary = make_dictionary(a.vocab)
    models, n_soft, n_t2r = build_twins(a, dictionary, points)
    t_start = time.perf_counter()
    with torch.no_grad():
        rows = generate_rows(models, dictionary, a, points)
        step_rows = direct_step_rows(models, dictionary, a)
        contexts = context_rows(models, dictionary, a)
    wall = time.perf_counter() - t_start
    print(f"\nmeasured in {wall:.0f} s", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result = {
        "benchmark": "mt_decoding: SequenceGenerator with forced output length, softmax transformer vs T2R twin",
        "machine": mach, "config": run_config(a, dictionary, n_soft, n_t2r, wall),
        "results": rows, "decoder_steps": step_rows, "contexts": contexts,
    }
    result["config"]["command"] = " ".join(["python -m benchmarks.mt_decoding"]
                                           + [shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv)])
    result["summary"] = summarize(rows, a, step_rows)
    result["summary"]["lines"] += context_lines(contexts)
    for line in result["summary"]["lines"]:
        print(line)
    save(result, a, out)
    return result


def context_lines(contexts):
    """--contexts: per L, each T2R twin's time per token and state against the teacher's."""
    lines = []
    for r in contexts:
        for n in ("t2r_softmax_cross", "t2r"):
            if f"{n}_ms_per_token" in r:
                lines.append(f"source = target = {r['context']}: {LABELS[n]} {r[f'{n}_ms_per_token']:.2f} ms/token "
                             f"(softmax / it {r['softmax_ms_per_token'] / r[f'{n}_ms_per_token']:.2f}x), state "
                             f"{r[f'{n}_state_bytes'] / 2**20:.2f} MiB (softmax {r['softmax_state_bytes'] / 2**20:.2f} MiB)")
    return lines


def summarize(rows, a, step_rows=()):
    s = {"lines": []}
    if len(step_rows) > 1:
        first, last = step_rows[0], step_rows[-1]
        for m in ("t2r", "softmax"):
            ratio = last[f"{m}_ms_per_step"] / first[f"{m}_ms_per_step"]
            s[f"direct_{m}_step_ratio"] = {"from": first["src"], "to": last["src"], "ratio": ratio}
            s["lines"].append(f"{m} decoder step timed directly, ms by source length: "
                              + ", ".join(f"{r['src']}: {r[f'{m}_ms_per_step']:.2f}" for r in step_rows)
                              + f" ({last['src']} / {first['src']}: {ratio:.2f})")
    for beam in a.beams:
        for r in rows:
            if r["beam"] == beam and r["sweep"] == "batch":
                s[f"beam{beam}_batch{r['batch']}_speedup"] = r["speedup"]
                s["lines"].append(f"beam {beam}, batch {r['batch']}, src {r['src']}, tgt {r['tgt']}: softmax / T2R "
                                  f"{r['speedup']:.2f}x (generate)")
        main = [r for r in rows if r["beam"] == beam and r["src"] == a.fixed_src and r["tgt"] == a.fixed_tgt
                and r["sweep"] != "batch"]
        if main:
            r = main[0]
            s[f"beam{beam}_speedup"] = r["speedup"]
            s[f"beam{beam}_decoder_speedup"] = r["softmax_decoder_ms_per_step"] / r["t2r_decoder_ms_per_step"]
            s["lines"].append(f"beam {beam}, src {r['src']}, tgt {r['tgt']}: softmax / T2R {r['speedup']:.2f}x "
                              f"(generate), {s[f'beam{beam}_decoder_speedup']:.2f}x (decoder steps)")
        src = sorted((r for r in rows if r["beam"] == beam and r["sweep"] == "source"), key=lambda r: r["src"])
        if len(src) > 1:
            for m in ("t2r", "softmax"):
                key = f"{m}_decoder_ms_per_step"
                ratio = src[-1][key] / src[0][key]
                s[f"beam{beam}_{m}_step_ratio_src{src[-1]['src']}_vs_{src[0]['src']}"] = ratio
                s["lines"].append(f"beam {beam}, {m} decoder ms/step by source length: "
                                  + ", ".join(f"{r['src']}: {r[key]:.2f}" for r in src)
                                  + f" ({src[-1]['src']} / {src[0]['src']}: {ratio:.2f})")
    return s


# ----------------------------------------------------------- the speed table's rows and section
# (run_all.py writes docs/results/speed.md from these and this script's JSON)
def targets(mt):
    s = mt.get("summary", {})
    return mt_generate_rows(mt["config"], s) + mt_step_ratio_rows(s)


def mt_generate_rows(c, s):
    """softmax / T2R through fairseq's SequenceGenerator, at batch 1 and batched."""
    rows = []
    if "beam4_speedup" in s:
        rows.append(checked("MT decoding", f"softmax / T2R, beam 4, src {c['fixed_src']}, tgt {c['fixed_tgt']}, "
                            f"batch {c['batch']} (generate)",
                            f"{s['beam4_speedup']:.2f}x", ">= 2x", s["beam4_speedup"] >= 2))
        rows.append(reported("MT decoding", "same, decoder steps only (encoder time removed)",
                             f"{s['beam4_decoder_speedup']:.2f}x"))
    for b in c.get("batched", []):
        v = s.get(f"beam4_batch{b}_speedup")
        if v is not None:
            rows.append(checked("MT decoding", f"same at batch {b} ({b} sentences x 4 beams per step)", f"{v:.2f}x",
                                ">= 2x", v >= 2))
    return rows


def mt_step_ratio_rows(s):
    """Decoder step time, longest source over shortest: timed directly, and through the generator."""
    rows = []
    for m in ("t2r", "softmax"):
        d = s.get(f"direct_{m}_step_ratio")
        if d:
            what = (f"{'T2R' if m == 't2r' else 'softmax'} decoder step (timed directly), "
                    f"source {d['to']} / source {d['from']}")
            rows.append(checked("MT decoding", what, f"{d['ratio']:.3f}", "<= 1.10 (flat)", d["ratio"] <= 1.10)
                        if m == "t2r" else reported("MT decoding", what, f"{d['ratio']:.3f}"))
    for k, v in s.items():
        if k.startswith("beam4_t2r_step_ratio") or k.startswith("beam4_softmax_step_ratio"):
            a, b = k.split("_src")[1].split("_vs_")
            who = "T2R" if "_t2r_" in k else "softmax"
            rows.append(reported("MT decoding", f"{who} (generate - encoder) / steps, source {a} / source {b} "
                                 "(whole SequenceGenerator, first-step source summaries included)", f"{v:.3f}"))
    return rows


def section(mt):
    c = mt["config"]
    lines = ["", "## MT decoding", "",
             f"{c['enc_layers']}+{c['dec_layers']} layers, {c['dim']} dims, {c['heads']} heads, FFN {c['ffn']}, "
             f"vocab {c['vocab']}, T2R k={c['feature_dim']} (self and cross), batch {c['batch']} (sweeps), fp32; "
             "fairseq's SequenceGenerator with the output length forced.", ""]
    rows = [[r["sweep"], r["beam"], r.get("batch", c["batch"]), r["src"], r["tgt"], f"{r['softmax_s']:.2f}", f"{r['t2r_s']:.2f}",
             f"{r['speedup']:.2f}x", f"{r['softmax_decoder_ms_per_step']:.2f}", f"{r['t2r_decoder_ms_per_step']:.2f}",
             f"{r['encoder_s']:.3f}"] for r in mt["results"]]
    lines += table(rows, ["sweep", "beam", "batch", "src", "tgt", "softmax s", "T2R s", "speedup", "softmax ms/step",
                          "T2R ms/step", "encoder s"])
    if mt.get("decoder_steps"):
        lines += ["", "Decoder steps timed directly (no SequenceGenerator; state reordered each step):", ""]
        lines += table([[r["src"], r["beam"], r["steps"], f"{r['softmax_ms_per_step']:.2f}", f"{r['t2r_ms_per_step']:.2f}",
                         f"{r['speedup']:.2f}x"] for r in mt["decoder_steps"]],
                       ["src", "beam", "steps", "softmax ms/step", "T2R ms/step", "speedup"])
    return lines + ["", "![mt_decoding](../../benchmarks/results/mt_decoding.png)"]


if __name__ == "__main__":
    main()
