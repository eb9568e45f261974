"""Conversion quality, measured as a conversion paper's reviewer would accept it: every arm of
``fairseq_t2r/demo/variants.py`` finetuned from one softmax teacher trained to its plateau, beside
the softmax control trained for the same budget, over several seeds (mean and spread), by
likelihood and by faithfulness to the teacher (top-1 agreement, KL; for translation, BLEU against
the teacher's own output as well as the references).

It is the demo's pipeline (same steps, same fairseq commands, resumable) at a larger size: a
4-layer LM on 512-token blocks, a model that really uses its attention (the bare swap's cost is
reported for every setting).

    python -m benchmarks.quality [--quick] [--out DIR] [--tasks lm] [--seeds 1,2,3]
                                 [--variants control,t2r,...] [--one-seed ARMS] [--lm-teacher PATH] [--jobs 2]
                                 [--demo-size]

Writes ``OUT/quality.json``, ``OUT/quality.png`` and ``OUT/quality.md`` (copy the last to
``docs/results/quality.md`` with the command that made it).
"""
import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from benchmarks import quality_report

# the benchmark's size: 4 layers, 512-token blocks, the whole LM corpus sample the teacher saw. The LM
# teacher gets 16000 updates on one complete schedule (warmup, linear decay to 0): the teacher of
# docs/results/quality_teacher16000.md took 16000 updates over three runs (quality_logs/lm_teacher*.sh) and
# was the first benchmark model whose bare swap cost over 50%, a model that really uses its attention
BENCH = dict(lm_lines=60000, lm_merges=4000, mt_pairs=None, mt_merges=8000, layers=4, dim=128, ffn=512, heads=4,
             lm_teacher_updates=16000, mt_teacher_updates=6000, ft_updates=300, transfer_updates=60, validate_every=100,
             max_tokens=2048, contexts=[512, 2048], tokens_per_sample=512)
# the hybrid-RULE arms: one of the 4 layers kept softmax, chosen by each --t2r-select rule (layer_select.py)
ALL_ARMS = ("control,t2r,elu,rfa,transfer,distill,hybrid,hybrid-last,hybrid-even,hybrid-transfer,hybrid-kl,"
            "cross-linear,decay,gate,delta,gated-delta,window,window-only")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()  # default: the benchmark's own size (BENCH)
    size.add_argument("--quick", action="store_true", help="the demo's quick preset on the bundled slices (a smoke run)")
    size.add_argument("--demo-size", action="store_true", help="the demo's default preset (its data, model and "
                   "teachers, shared through the teacher cache): seeds at the demo's size, e.g. for translation, "
                   "whose benchmark-size teacher (4 + 4 layers, the whole corpus) costs hours on a CPU")
    p.add_argument("--out", default=None, help="working folder (default runs/quality or runs/quality-quick)")
    p.add_argument("--tasks", default="lm", help="lm, mt or lm,mt")
    p.add_argument("--seeds", default="1,2,3", help="seeds of every finetuning arm (the first also seeds data and teacher)")
    p.add_argument("--variants", default=ALL_ARMS, help="arms (demo/variants.py)")
    p.add_argument("--one-seed", default="", help="arms (of --variants) run with the first seed only: "
                   "reported with n = 1 and never ranked")
    p.add_argument("--lm-teacher", default=None, help="a softmax transformer_lm trained on this data (its "
                   "fairseq-train log beside it is checked for the plateau)")
    p.add_argument("--mt-teacher", default=None)
    p.add_argument("--lm-text", default=None, help="plain text, one line per sentence, instead of SOTU + Brown from "
                   "npm (a machine without the registries: the corpus carried as a file)")
    p.add_argument("--mt-src", default=None, help="English side of parallel text instead of LibreOffice help from apt")
    p.add_argument("--mt-tgt", default=None, help="German side, line-aligned with --mt-src")
    p.add_argument("--ft-updates", type=int, default=None, help="finetuning budget of every arm")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads of each run (jobs x threads at most the cores; "
                   "e.g. --jobs 1 --threads 2 while only the teacher trains)")
    p.add_argument("--report-only", action="store_true", help="write the report from the steps finished so far "
                   "(a run stopped early: unfinished runs are left out, and each arm's n says how many seeds it has)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from fairseq_t2r.demo import cli, plan, presets, results
    from fairseq_t2r.demo.report import where_lines
    from fairseq_t2r.demo.runner import Runner
    from fairseq_t2r.machine import machine

    t0 = time.time()
    if a.quick or a.demo_size:
        preset = presets.PRESETS["quick" if a.quick else "default"]
    else:
        preset = presets.Preset(**BENCH)
    if a.ft_updates:
        preset = replace(preset, ft_updates=a.ft_updates, transfer_updates=max(1, a.ft_updates // 5))
    out = Path(a.out or ("runs/quality-quick" if a.quick else "runs/quality")).resolve()
    data = REPO / "tests" / "data"
    # the corpora: the bundled slices for --quick, the user's files where given, else the registries' own
    corpora = dict(text=str(data / "lm" / "english.txt"), src=str(data / "mt" / "libreoffice.en"),
                   tgt=str(data / "mt" / "libreoffice.de")) if a.quick else {}
    if bool(a.mt_src) != bool(a.mt_tgt):
        sys.exit("quality: --mt-src and --mt-tgt go together (the two sides of one parallel text); give both")
    corpora.update({k: v for k, v in dict(text=a.lm_text, src=a.mt_src, tgt=a.mt_tgt).items() if v})
    seeds = [int(s) for s in a.seeds.split(",")]
    tasks = [t for t in a.tasks.split(",") if t]
    plans = {k: plan.TaskPlan(k, out, preset, cli.USER_DIR, seed=seeds[0], seeds=seeds, variants=a.variants, one_seed=a.one_seed,
                              teacher=a.lm_teacher if k == "lm" else a.mt_teacher, **corpora)
             for k in tasks}
    cli.preload_tools()
    steps = [s for p in plans.values() for s in p.steps()]
    runner = Runner(out, jobs=a.jobs, threads=a.threads)
    if not a.report_only:
        runner.run(steps)
    collected = {k: results.collect(p, runner) for k, p in plans.items()}
    header = {"benchmark": "quality", "command": "python -m benchmarks.quality " + " ".join(argv or sys.argv[1:]),
              "settings": asdict(preset), "seeds": seeds, "machine": machine(), "jobs": a.jobs, "threads": a.threads,
              # a report of a stopped run: the run's wall time is not this process's
              "seconds": None if a.report_only else round(time.time() - t0, 1)}
    summary = quality_report.summarize(collected)
    (out / "quality.json").write_text(json.dumps({**header, "summary": summary, **collected}, indent=1) + "\n")
    quality_report.plot(out / "quality.png", summary)
    # t2r-compare's where-it-loses lines for every arm's first seed (the plan's compare steps)
    where = [line for k, t in collected.items() for line in where_lines(k, t)]
    (out / "quality.md").write_text(quality_report.markdown(header, summary, collected) + "\n".join(["", *where]))
    print("\n".join(quality_report.headlines(summary)))
    print(f"quality: {out}/quality.md ({(time.time() - t0) / 60:.1f} min)")


if __name__ == "__main__":
    main()
