#!/usr/bin/env python
"""Run every speed benchmark and write the results table ``docs/results/speed.md``.

    python benchmarks/run_all.py              # full runs (~20 min on 2 quiet cores), results in
                                              # benchmarks/results/, table in docs/results/speed.md
    python benchmarks/run_all.py --quick      # smoke run (< 1 min): tiny models, nothing committed
                                              # is touched (writes to --out-dir, default a temp dir)
    python benchmarks/run_all.py --only lm_generation,training

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
    script = os.path.join(HERE, name + ".py")
    cmd = [sys.executable, script]
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


def targets(res):
    """[(area, what, figure, target, PASS/MISS or '')] from the results."""
    rows = []
    lm = res.get("lm_generation")
    if lm:
        by = {r["context"]: r for r in lm["results"]}
        s = lm.get("summary", {})
        ctxs = sorted(by)
        if "t2r_flatness" in s:
            f = s["t2r_flatness"]
            rows.append(("LM generation", f"T2R ms/token at {f['to']} / at {f['from']} (batch {lm['config']['batch']}; "
                         "the two contexts timed side by side)", f"{f['ratio']:.3f}", "<= 1.15", verdict(f["ratio"] <= 1.15)))
        if "t2r_flatness_across_rows" in s:
            f = s["t2r_flatness_across_rows"]
            a, b = by[f["from"]]["ms_per_token"], by[f["to"]]["ms_per_token"]
            drift = f" (the attention-free floor moved {b['floor_none'] / a['floor_none']:.3f}x)" if "floor_none" in a else ""
            rows.append(("LM generation", f"same, from the table's rows (timed minutes apart){drift}",
                         f"{f['ratio']:.3f}", "(report)", ""))
        for ctx, need in ((4096, 20), (8192, 35)):
            if ctx in by and "speedup" in by[ctx]:
                sp = by[ctx]["speedup"]
                rows.append(("LM generation", f"softmax / T2R time per token at {ctx}", f"{sp:.1f}x", f">= {need}x",
                             verdict(sp >= need)))
        if "t2r_state_constant" in s:
            last = by[ctxs[-1]]
            rows.append(("LM generation", "T2R incremental state bytes at every context",
                         f"{last['t2r_state_bytes']:,} B at each" if s["t2r_state_constant"] else "varies",
                         "constant", verdict(s["t2r_state_constant"])))
            ratio = last["t2r_state_bytes"] / last["softmax_state_bytes"]
            rows.append(("LM generation", f"T2R state / softmax KV cache at {ctxs[-1]}",
                         f"1/{1 / ratio:.0f} ({last['t2r_state_MB']:.2f} MB vs {last['softmax_state_MB']:.0f} MB)",
                         "<= 1/100", verdict(ratio <= 0.01)))
        if "t2r_over_floor_none_max" in s:
            v = s["t2r_over_floor_none_max"]
            rows.append(("LM generation", "T2R / same model with attention removed, per token (max over contexts)",
                         f"{v:.3f}", "<= 1.10", verdict(v <= 1.10)))
        if all("floor_proj" in r["ms_per_token"] and "floor_none" in r["ms_per_token"] for r in by.values()):
            # what limits the row above: the matmuls a T2R step cannot avoid, without any state
            v = min(r["ms_per_token"]["floor_proj"] / r["ms_per_token"]["floor_none"] for r in by.values())
            rows.append(("LM generation", "its limit: attention reduced to its two projections / attention removed "
                         "(min over contexts)", f"{v:.3f}", "(report)", ""))
        if "t2r_over_floor_proj_max" in s:
            v = s["t2r_over_floor_proj_max"]
            rows.append(("LM generation", "T2R / attention reduced to its two projections (max over contexts)",
                         f"{v:.3f}", "(report)", ""))
        if "merged_speedup" in s:
            rows.append(("LM generation", "merged vs unmerged projections, per token (median over contexts)",
                         f"{s['merged_speedup']:.3f}x", "(report)", ""))
    mt = res.get("mt_decoding")
    if mt:
        s = mt.get("summary", {})
        c = mt["config"]
        if "beam4_speedup" in s:
            rows.append(("MT decoding", f"softmax / T2R, beam 4, src {c['fixed_src']}, tgt {c['fixed_tgt']}, "
                         f"batch {c['batch']} (generate)",
                         f"{s['beam4_speedup']:.2f}x", ">= 2x", verdict(s["beam4_speedup"] >= 2)))
            rows.append(("MT decoding", "same, decoder steps only (encoder time removed)",
                         f"{s['beam4_decoder_speedup']:.2f}x", "(report)", ""))
        for b in c.get("batched", []):
            v = s.get(f"beam4_batch{b}_speedup")
            if v is not None:
                rows.append(("MT decoding", f"same at batch {b} ({b} sentences x 4 beams per step)", f"{v:.2f}x",
                             ">= 2x", verdict(v >= 2)))
        for m in ("t2r", "softmax"):
            d = s.get(f"direct_{m}_step_ratio")
            if d:
                rows.append(("MT decoding", f"{'T2R' if m == 't2r' else 'softmax'} decoder step (timed directly), "
                             f"source {d['to']} / source {d['from']}", f"{d['ratio']:.3f}",
                             "<= 1.10 (flat)" if m == "t2r" else "(report)",
                             verdict(d["ratio"] <= 1.10) if m == "t2r" else ""))
        for k, v in s.items():
            if k.startswith("beam4_t2r_step_ratio") or k.startswith("beam4_softmax_step_ratio"):
                a, b = k.split("_src")[1].split("_vs_")
                who = "T2R" if "_t2r_" in k else "softmax"
                rows.append(("MT decoding", f"{who} (generate - encoder) / steps, source {a} / source {b} "
                             "(whole SequenceGenerator, first-step source summaries included)", f"{v:.3f}",
                             "(report)", ""))
    tr = res.get("training")
    if tr:
        layer = {r["length"]: r for r in tr.get("layer", [])}
        for T, need in ((1024, 1.5), (4096, 4), (8192, 8)):
            if T in layer:
                sp = layer[T]["speedup"]
                rows.append(("training", f"attention layer fwd+bwd, softmax / T2R at {T}", f"{sp:.2f}x",
                             f">= {need}x", verdict(sp >= need)))
        big = max((r for r in tr.get("layer", []) if "peak_MB" in r), key=lambda r: r["length"], default=None)
        if big:
            pm = big["peak_MB"]
            rows.append(("training", f"layer step peak memory T2R / softmax at {big['length']} (step only)",
                         f"{big['memory_ratio']:.2f} ({pm['t2r']:.0f} MB vs {pm['softmax']:.0f} MB)", "<= 0.25",
                         verdict(big["memory_ratio"] <= 0.25)))
            rows.append(("training", f"same, softmax's causal mask ({big['softmax_mask_MB']:.0f} MB) counted",
                         f"{big['memory_ratio_with_mask']:.2f}", "<= 0.25", verdict(big["memory_ratio_with_mask"] <= 0.25)))
        if "lm" in tr:
            sp = tr["lm"]["speedup"]
            rows.append(("training", f"whole {tr['config']['layers']}-layer LM fwd+bwd at {tr['lm']['length']}",
                         f"{sp:.2f}x", ">= 2x", verdict(sp >= 2)))
    gpu = res.get("gpu_check")
    if gpu and gpu.get("equality"):
        ok = all(r["pass"] for r in gpu["equality"]["rows"])
        worst = max(r["out_rel_err"] for r in gpu["equality"]["rows"] if r["dtype"] == "fp32")
        rows.append(("GPU", "ours == fla (fp32 tight, bf16/fp16 loose)", f"fp32 rel err {worst:.1e}", "all pass",
                     verdict(ok)))
    return rows


def table(rows, head):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def write_markdown(res, out_dir, path, command):
    lines = ["# Speed: T2R vs fairseq softmax", "",
             f"Generated by `{command}` from the JSON files in `{os.path.relpath(out_dir, REPO)}/`. "
             "Every figure is a ratio of two timings taken side by side in one process (interleaved, "
             "medians); absolute times are for orientation only.", ""]
    machines = {n: r["machine"] for n, r in res.items() if r}
    if machines:
        lines.append("Machine:")
        lines.append("")
        for n, m in machines.items():
            extra = f"; GPU {m['gpu']}, CUDA {m.get('cuda')}, fla {m.get('fla')}" if m.get("gpu") else ""
            lines.append(f"- `{n}`: {fmt_machine(m)}{extra}")
        lines.append("")
    if not res.get("gpu_check"):
        lines += ["No GPU in this run: the GPU figures (fla, fp32/bf16/fp16) of the last GPU session are in "
                  "`docs/results/gpu_h100.md`.", ""]
    lines += ["## Targets", ""]
    lines += table(targets(res), ["area", "figure", "measured", "target", ""])
    lm = res.get("lm_generation")
    if lm:
        c = lm["config"]
        lines += ["", "## LM generation (ms per token)", "",
                  f"{c['layers']} layers, {c['dim']} dims, {c['heads']} heads, FFN {c['ffn']}, vocab {c['vocab']}, "
                  f"T2R k={c['feature_dim']}, batch {c['batch']}, fp32, {c.get('clock', 'wall')} clock. Softmax's KV "
                  f"cache is synthesised above {c.get('softmax_prefill_max')} tokens (see the script).", ""]
        variants = c.get("variants", ["softmax", "t2r"])
        head = ["context"] + variants + ["softmax / T2R", "softmax state MB", "T2R state MB"]
        rows = []
        for r in lm["results"]:
            rows.append([r["context"]] + [f"{r['ms_per_token'][v]:.2f}" for v in variants]
                        + [f"{r.get('speedup', float('nan')):.1f}x", f"{r['softmax_state_MB']:.1f}", f"{r['t2r_state_MB']:.2f}"])
        lines += table(rows, head)
        lines += ["", "![lm_generation](../../benchmarks/results/lm_generation.png)"]
    mt = res.get("mt_decoding")
    if mt:
        c = mt["config"]
        lines += ["", "## MT decoding", "",
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
        lines += ["", "![mt_decoding](../../benchmarks/results/mt_decoding.png)"]
    tr = res.get("training")
    if tr:
        c = tr["config"]
        if tr.get("layer"):
            lines += ["", "## Training: one attention layer, forward + backward", "",
                      f"{c['dim']} dims, {c['heads']} heads, T2R k={c['feature_dim']}, batch 1, fp32. {c['layer_call']}. "
                      f"Memory: {c['memory']}.", ""]
            rows = []
            for r in tr["layer"]:
                pm = r.get("peak_MB", {})
                rows.append([r["length"], f"{r['ms']['softmax']:.1f}", f"{r['ms']['t2r']:.1f}", f"{r['speedup']:.2f}x",
                             f"{pm['softmax']:.0f} (+{r['softmax_mask_MB']:.0f} mask)" if pm else "",
                             f"{pm['t2r']:.0f}" if pm else ""])
            lines += table(rows, ["length", "softmax ms", "T2R ms", "speedup", "softmax peak MB", "T2R peak MB"])
            lines += ["", "![training](../../benchmarks/results/training.png)"]
        if tr.get("lm"):
            r = tr["lm"]
            lines += ["", f"Whole LM ({c['layers']} layers, vocab {c['vocab']}), one sequence of {r['length']} tokens, "
                          f"fwd + bwd: softmax {r['ms']['softmax']:.0f} ms, T2R {r['ms']['t2r']:.0f} ms, "
                          f"{r['speedup']:.2f}x."]
        if tr.get("tune"):
            t = tr["tune"]
            lines += ["", "### Quadratic vs chunked form, chunk size (attention core alone, fwd + bwd, ms)", ""]
            def key(n):  # older runs named the chunked column by its chunk size
                return "chunked" if n.startswith("chunked C=") and n != "chunked C=T" else n
            qrows = [{"length": r["length"], "ms": {key(n): v for n, v in r["ms"].items()}} for r in t["quadratic_vs_chunked"]]
            names = list(dict.fromkeys(n for r in qrows for n in r["ms"]))
            lines += table([[r["length"]] + [f"{r['ms'][n]:.2f}" if n in r["ms"] else "" for n in names] for r in qrows],
                           ["length"] + [n if n != "chunked" else f"chunked C=min(T, {t['current']['DEFAULT_CHUNK_SIZE']})"
                                         for n in names])
            if t["chunk_sizes"]:
                names = sorted({n for r in t["chunk_sizes"] for n in r["ms"]}, key=lambda n: int(n[2:]))
                lines += [""] + table([[r["length"]] + [f"{r['ms'][n]:.1f}" if n in r["ms"] else "" for n in names]
                                       for r in t["chunk_sizes"]], ["length"] + names)
            lines += ["", f"In force: QUADRATIC_MAX_LEN = {t['current']['QUADRATIC_MAX_LEN']}, "
                          f"DEFAULT_CHUNK_SIZE = {t['current']['DEFAULT_CHUNK_SIZE']}."]
    gpu = res.get("gpu_check")
    if gpu:
        lines += ["", "## GPU (gpu_check.py)", ""]
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
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


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
                      "python3 benchmarks/gpu_check.py --out DIR)")
                continue
            if run(name, a.out_dir, a.quick, a.threads, {}) != 0:
                failed.append(name)
    res = {n: load(a.out_dir, n) for n in BENCHMARKS}
    command = "python benchmarks/run_all.py" + (" --quick" if a.quick else "")
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
