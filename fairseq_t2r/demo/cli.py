"""``t2r-demo``: convert pretrained softmax transformers into RNNs on real data, and report
what T2R gained and lost against the teacher, ELU and RFA feature maps, attention transfer and
training from scratch.

    t2r-demo [--quick | --full] [--out DIR] [--tasks lm,mt] [--lm-text FILE]
             [--mt-src FILE --mt-tgt FILE] [--lm-teacher PATH] [--mt-teacher PATH] [--jobs N]

Writes ``OUT/report/{report.md,results.json,*.png}``. A rerun reuses every finished step and
says so; an interrupted run resumes where it stopped.
"""
import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..interrupts import one_line_on_interrupt

USER_DIR = str(Path(__file__).resolve().parents[1])


def build_parser():
    from ..patches import HOW_TO_SEE

    p = argparse.ArgumentParser(prog="t2r-demo", description=__doc__.split("\n\n")[0],
                                epilog=f"Ctrl-C stops the demo; the same command resumes it. {HOW_TO_SEE}.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="preset", action="store_const", const="quick",
                      help="tiny models and few updates on the bundled slices (under 3 minutes)")
    size.add_argument("--full", dest="preset", action="store_const", const="full",
                      help="the whole corpora and longer training (hours on 2 cores)")
    p.set_defaults(preset="default")
    from ..config import add_options
    from .options import DemoConfig

    add_options(p, DemoConfig)
    return p


def check_args(args):
    from ..errors import T2RUserError

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - {"lm", "mt"}:
        raise T2RUserError(f"--tasks {args.tasks!r}: name lm, mt or both (lm,mt)")
    if bool(args.mt_src) != bool(args.mt_tgt):
        raise T2RUserError("pass both --mt-src FILE and --mt-tgt FILE, or neither")
    for flag in ("lm_text", "mt_src", "mt_tgt", "lm_teacher", "mt_teacher"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise T2RUserError(f"--{flag.replace('_', '-')} {path}: no such file")
    if args.jobs < 1:
        raise T2RUserError(f"--jobs {args.jobs}: must be at least 1")
    return tasks


def preload_tools():
    """Import the tools once here, so each forked step starts at once; the demo itself prints only progress."""
    # the steps' fairseq-train --user-dir finds the package already imported (before fairseq) and
    # skips it: register the models and criteria in this process, which every step forks from
    from .. import criterions, models, toolrun  # noqa: F401

    toolrun.preload([*toolrun.FAIRSEQ_TOOLS, "fairseq_t2r.convert", "fairseq_t2r.prep.lm", "fairseq_t2r.prep.mt",
                     "fairseq_t2r.demo.faithfulness"])


def main(argv=None):
    from .. import patches  # noqa: F401  before fairseq's import: hides its known-harmless notices

    args = build_parser().parse_args(argv)
    tasks = check_args(args)
    t_start = time.time()
    out = Path(args.out or f"runs/demo-{args.preset}").resolve()

    from ..machine import machine
    from . import plan as plans
    from . import report, results, takeaway
    from .presets import PRESETS
    from .runner import Runner

    preset = PRESETS[args.preset]
    task_plans = {}
    for k in tasks:
        task_plans[k] = plans.TaskPlan(
            k, out, preset, USER_DIR, seed=args.seed, text=args.lm_text, src=args.mt_src, tgt=args.mt_tgt,
            teacher=args.lm_teacher if k == "lm" else args.mt_teacher, variants=args.variants,
            teacher_cache=not args.no_teacher_cache)
    print(f"t2r-demo: preset {args.preset}, tasks {', '.join(tasks)}, working folder {out}", flush=True)
    preload_tools()
    steps = [s for p in task_plans.values() for s in p.steps()]
    # the runner starts steps in list order: every task's data and teacher first (the longest path), then
    # translation's steps (its updates cost ~1.5x the LM's), the LM's, and last the compare steps, which wait
    # for all of a task's arms: both run side by side at the end rather than one alone beside an idle core
    def order(s):
        if s.name.endswith(("/data", "/teacher")):
            return 0
        return 3 if s.name.endswith("/compare") else 1 if s.name.startswith("mt/") else 2
    steps.sort(key=order)
    # speed is timed alone, after all training: a neighbour's run would distort the timings
    others = [s.name for s in steps if not s.name.endswith("/speed")]
    previous = []
    for s in steps:
        if s.name.endswith("/speed"):
            s.deps = sorted(set(s.deps) | set(others) | set(previous))
            previous.append(s.name)
    runner = Runner(out, jobs=args.jobs)
    # a plain kill ends the demo through Python, so that its running steps are ended too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runner.run(steps)

    collected = {k: results.collect(p, runner) for k, p in task_plans.items()}
    header = {"preset": args.preset, "settings": asdict(preset), "machine": machine(), "jobs": args.jobs,
              "seconds": round(time.time() - t_start, 1), "command": "t2r-demo " + " ".join(argv or sys.argv[1:])}
    previous = out / "report" / "results.json"
    if not runner.ran and previous.exists():  # a rerun that only rewrote the report: keep the run's figures
        old = json.loads(previous.read_text())
        header.update({k: old[k] for k in ("seconds", "machine") if k in old})
    commands = [s.command() for s in steps]
    folder = out / "report"
    header["takeaway"] = takeaway.sentences(collected, args.preset)
    report.write(folder, header, collected, commands)
    print(summary(collected))
    print("\n".join(header["takeaway"]))
    print(f"t2r-demo: report in {folder}/report.md ({header['seconds'] / 60:.1f} min)")
    return 0


def summary(collected) -> str:
    lines = []
    for k, t in collected.items():
        key = "test_ppl" if k == "lm" else "bleu"
        what = "test perplexity" if k == "lm" else "test BLEU"
        figures = ", ".join(f"{name} {r.get(key)}" for name, r in t["runs"].items())
        lines.append(f"{k} {what}: {figures}")
    return "\n".join(lines)


@one_line_on_interrupt("t2r-demo", "finished steps are kept and an interrupted training goes on from its last "
                                   "checkpoint: rerun the same command to resume")
def cli_main():
    # one OpenMP thread per run, decided before torch starts its pool
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())


if __name__ == "__main__":
    cli_main()
