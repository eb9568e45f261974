#!/usr/bin/env python
"""Run every speed benchmark and write the results table ``docs/results/speed.md``.

    python -m benchmarks.run_all              # full runs (~20 min on 2 quiet cores), results in
                                              # benchmarks/results/, table in docs/results/speed.md
    python -m benchmarks.run_all --quick      # smoke run (< 1 min): tiny models, nothing committed
                                              # is touched (writes to --out-dir, default a temp dir)
    python -m benchmarks.run_all --only lm_generation,training

Each benchmark runs in its own process (``lm_generation.py``, ``mt_decoding.py``, ``training.py``,
and ``gpu_check.py`` when CUDA is available), writing ``<name>.json`` and ``<name>.png`` to the
output folder; then the table of targets (figure, target, PASS/MISS) is generated from those
JSON files with the machine description they record. ``--table-only`` regenerates the table from
existing results without running anything.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BENCHMARKS = ["lm_generation", "mt_decoding", "training", "gpu_check"]


def run(name, out_dir, quick, threads, extra):
    cmd = [sys.executable, "-m", "benchmarks." + name]
    if name == "gpu_check":
        cmd += ["--out", out_dir]
    else:
        cmd += ["--out", os.path.join(out_dir, name)]
        if quick:
            cmd.append("--quick")
        if threads:
            cmd += ["--threads", str(threads)]
    cmd += extra.get(name, [])
    print(f"\n=== {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO)
    print(f"=== {name}: exit {res.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    return res.returncode


def load(out_dir, name):
    path = os.path.join(out_dir, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def verdict(ok):
    return "PASS" if ok else "MISS"


def fmt_machine(m):
    return (f"{m.get('cpu')} ({m.get('cpu_count')} cores), {m.get('threads')} torch threads, torch {m.get('torch')}, "
            f"Python {m.get('python')}, {m.get('platform')}; {m.get('date')}")


# --------------------------------------------------------------------------- the targets table

def checked(area, what, figure, target, ok):
    """A targets row with a target: PASS or MISS."""
    return (area, what, figure, target, verdict(ok))


def reported(area, what, figure):
    """A targets row without a target: the figure is reported only."""
    return (area, what, figure, "(report)", "")


def targets(res):
    """[(area, what, figure, target, PASS/MISS or '')] from the results."""
    rows = []
    for name, rows_of in (("lm_generation", lm_targets), ("mt_decoding", mt_targets),
                          ("training", training_targets), ("gpu_check", gpu_targets)):
        if res.get(name):
            rows += rows_of(res[name])
    return rows


def lm_targets(lm):
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


def mt_targets(mt):
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


def training_targets(tr):
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


def gpu_targets(gpu):
    if not gpu.get("equality"):
        return []
    ok = all(r["pass"] for r in gpu["equality"]["rows"])
    worst = max(r["out_rel_err"] for r in gpu["equality"]["rows"] if r["dtype"] == "fp32")
    return [checked("GPU", "ours == fla (fp32 tight, bf16/fp16 loose)", f"fp32 rel err {worst:.1e}", "all pass", ok)]


# --------------------------------------------------------------------------- the markdown page

def table(rows, head):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def write_markdown(res, out_dir, path, command):
    lines = intro_lines(res, out_dir, command)
    lines += ["## Targets", ""]
    lines += table(targets(res), ["area", "figure", "measured", "target", ""])
    for name, section in (("lm_generation", lm_section), ("mt_decoding", mt_section),
                          ("training", training_section), ("gpu_check", gpu_section)):
        if res.get(name):
            lines += section(res[name])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def intro_lines(res, out_dir, command):
    """Title, where the figures come from, the machines, and where the GPU figures are when none ran."""
    lines = ["# Speed: T2R vs fairseq softmax", "",
             f"Generated by `{command}` from the JSON files in `{os.path.relpath(out_dir, REPO)}/`. "
             "Every figure is a ratio of two timings taken side by side in one process (interleaved, "
             "medians); absolute times are for orientation only.", ""]
    machines = {n: r["machine"] for n, r in res.items() if r}
    if machines:
        lines += ["Machine:", ""]
        for n, m in machines.items():
            extra = f"; GPU {m['gpu']}, CUDA {m.get('cuda')}, fla {m.get('fla')}" if m.get("gpu") else ""
            lines.append(f"- `{n}`: {fmt_machine(m)}{extra}")
        lines.append("")
    if not res.get("gpu_check"):
        lines += ["No GPU in this run: the GPU figures (fla, fp32/bf16/fp16) of the last GPU session are in "
                  "`docs/results/gpu_h100.md`.", ""]
    return lines


def lm_section(lm):
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


def mt_section(mt):
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


def training_section(tr):
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


def gpu_section(gpu):
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run of every script (< 1 min)")
    p.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(BENCHMARKS))
    p.add_argument("--threads", type=int, default=None, help="torch threads for every script (default: theirs)")
    p.add_argument("--out-dir", default=None,
                   help="folder for the JSON/PNG files (default benchmarks/results; --quick: a temporary folder)")
    p.add_argument("--table", default=None,
                   help="markdown table to write (default docs/results/speed.md; --quick: <out-dir>/speed.md)")
    p.add_argument("--table-only", action="store_true", help="only regenerate the table from existing results")
    a = p.parse_args(argv)
    if a.out_dir is None:
        a.out_dir = tempfile.mkdtemp(prefix="t2r_bench_quick_") if a.quick else os.path.join(HERE, "results")
    if a.table is None:
        a.table = os.path.join(a.out_dir, "speed.md") if a.quick else os.path.join(REPO, "docs", "results", "speed.md")
    names = a.only.split(",") if a.only else list(BENCHMARKS)
    failed = []
    if not a.table_only:
        import torch

        for name in names:
            if name == "gpu_check" and not torch.cuda.is_available():
                print("\n=== gpu_check skipped: no CUDA here (run it on a GPU machine: "
                      "python3 -m benchmarks.gpu_check --out DIR)")
                continue
            if run(name, a.out_dir, a.quick, a.threads, {}) != 0:
                failed.append(name)
    res = {n: load(a.out_dir, n) for n in BENCHMARKS}
    command = "python -m benchmarks.run_all" + (" --quick" if a.quick else "")
    path = write_markdown({n: r for n, r in res.items() if r}, a.out_dir, a.table, command)
    print(f"\nwrote {path}")
    with open(path) as f:
        print(f.read())
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
