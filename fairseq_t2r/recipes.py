"""What the paper-scale recipes share (``examples/wikitext103``, ``examples/wmt14_en_de``).

A recipe is a short list of shell commands -- ``t2r-convert``, ``fairseq-train``,
``fairseq-eval-lm`` / ``fairseq-generate`` -- built from a released fairseq checkpoint, a data
directory and the number of GPUs. ``--dry-run`` checks everything and prints the commands; without
it they run in order. The checks catch on a CPU, in seconds, what would otherwise fail hours into
a GPU job: the checkpoint is of the expected architecture, the data directory holds the
dictionary the checkpoint was trained with and the splits the commands read, and the planned
``fairseq-train`` command, parsed by fairseq's own parser, builds a T2R model into which every
teacher tensor loads (the ``--finetune-from-model`` load, done in memory). The other fairseq
commands are parsed by their tools' parsers, so a misspelt option cannot wait until the end of a
training run to show up.

Mistakes stop with one line ``fairseq_t2r: error: ...`` (exit 1) before anything is written.
"""
import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence

from . import checkpoint
from .command_line import parse_tool_args
from .errors import T2RUserError

# the checks, under the names the recipes' scripts use (recipes.load_teacher, ...)
from .recipe_checks import (  # noqa: F401
    Teacher,
    add_plan_options,
    add_training_switches,
    batch_lines,
    check_data_dir,
    check_finetune_start,
    check_split,
    check_vocab,
    checked_steps,
    describe,
    gpu_count,
    load_dictionary,
    load_teacher,
    model_flags,
    parse_steps,
    release,
    update_freq,
    vocab_size,
)

USER_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(USER_DIR)

# console script -> module, for environments where the console scripts are not installed
TOOL_MODULES = {
    "t2r-convert": "fairseq_t2r.convert",
    "fairseq-train": "fairseq_cli.train",
    "fairseq-eval-lm": "fairseq_cli.eval_lm",
    "fairseq-generate": "fairseq_cli.generate",
    "fairseq-score": "fairseq_cli.score",
}


class RecipeArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one ``fairseq_t2r: error`` line and exit 1 like every other mistake."""

    def error(self, message):
        raise T2RUserError(f"{message} (see {self.prog} --help)")


def recipe_parser(prog: str, description: str, checkpoint: str, data: str) -> RecipeArgumentParser:
    """A recipe's parser with the options every recipe starts with: --checkpoint, --data, --out."""
    p = RecipeArgumentParser(prog=prog, description=description)
    p.add_argument("--checkpoint", required=True, help=checkpoint)
    p.add_argument("--data", required=True, help=data)
    p.add_argument("--out", required=True, help="work directory: swapped.pt, checkpoints/, eval/, results.json")
    return p


def tool(name: str) -> List[str]:
    """The argv prefix that runs console tool ``name`` in *this* Python environment.

    The bare name when it is on PATH and belongs to this interpreter's environment (what a user
    types after ``pip install -e .``), its full path when only this environment has it, else
    ``python -m module`` so that the commands run even where the console scripts are not installed.
    """
    sibling = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
        on_path = shutil.which(name)
        if on_path and os.path.realpath(on_path) == os.path.realpath(sibling):
            return [name]
        return [sibling]
    return [sys.executable, "-m", TOOL_MODULES[name]]


# --------------------------------------------------------------------------- what every recipe's script does

class WorkDir(NamedTuple):
    """What a run writes under --out: the converted teacher, fairseq-train's checkpoints, the evaluations."""
    out: str
    swapped: str
    save_dir: str
    best: str
    evals: str


def work_dir(out: str) -> WorkDir:
    out = os.path.abspath(out)
    save_dir = os.path.join(out, "checkpoints")
    return WorkDir(out, os.path.join(out, "swapped.pt"), save_dir, os.path.join(save_dir, "checkpoint_best.pt"),
                   os.path.join(out, "eval"))


def t2r_options(args: argparse.Namespace) -> List[str]:
    """The recipe's --t2r-* flags (``args.cross``: a translation recipe's --t2r-cross)."""
    cross = getattr(args, "cross", None)
    return ["--t2r-feature-map", args.feature_map, "--t2r-feature-dim", str(args.feature_dim),
            *(["--t2r-cross", cross] if cross else [])]


def finetune_command(teacher: Teacher, base: List[str], model_keys: Sequence[str], args: argparse.Namespace,
                     work: WorkDir, options: List[str], fp16: List[str]):
    """fairseq-train BASE, the teacher's model flags, the T2R options, --finetune-from-model, then the
    recipe's ``options``, fp16 and --train-extra; built and loaded once to check it: (argv, header line)."""
    train = tool("fairseq-train") + base + model_flags(teacher, base, model_keys) + t2r_options(args) + [
        "--finetune-from-model", work.swapped, "--save-dir", work.save_dir, "--no-epoch-checkpoints", *options,
        *([] if args.no_fp16 or args.cpu else fp16), *(["--cpu"] if args.cpu else []),
    ] + shlex.split(args.train_extra)
    copied, new = check_finetune_start(train[len(tool("fairseq-train")):], teacher)
    return train, (f"checked: the fairseq-train command builds t2r_{teacher.arch} and loads the teacher into it "
                   f"({copied} tensors copied, {new} new feature-map tensors)")


def check_commands(plan: "Plan", name: str):
    """Parse each of the plan's ``name`` commands with that tool's own parser."""
    prefix = tool(name)
    for step in plan.steps:
        if step.argv and step.argv[: len(prefix)] == prefix:
            parse_tool_args(name, step.argv[len(prefix):])


def run_recipe(build_parser, make_plan, argv, **metric):
    """Check the plan and print it; without --dry-run, run it (``metric``: execute's metric, metric_name, targets)."""
    args = build_parser().parse_args(argv)
    with quiet_logs():
        plan, teacher = make_plan(args)
    release(teacher)
    print(plan.render(), flush=True)
    if not args.dry_run:
        work = work_dir(args.out)
        execute(plan, out=work.out, swapped=work.swapped, teacher=teacher, **metric, t2r_options={
            "t2r_feature_map": args.feature_map, "t2r_feature_dim": args.feature_dim,
            "t2r_cross": getattr(args, "cross", None)})


# --------------------------------------------------------------------------- plan: print or run

@dataclass
class Step:
    name: str  # what --steps selects: teacher, convert, train, eval
    title: str
    argv: Optional[List[str]] = None  # one command...
    stdout: Optional[str] = None  # ...whose standard output goes to this file
    shell: Optional[str] = None  # or a shell pipeline (bash)
    log: Optional[str] = None  # where the output is also kept
    result: Optional[tuple] = None  # (model, split): the figure its output reports goes to results.json

    def render(self) -> str:
        if self.shell is not None:
            return self.shell
        line = shlex.join(self.argv)
        return f"{line} > {shlex.quote(self.stdout)}" if self.stdout else line


@dataclass
class Plan:
    title: str
    header: List[str] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)

    def render(self) -> str:
        out = [f"# {self.title}"] + [f"# {line}" for line in self.header]
        for i, step in enumerate(self.steps, 1):
            out += ["", f"# {i}/{len(self.steps)} {step.name}: {step.title}", step.render()]
        return "\n".join(out)


def subprocess_env():
    env = dict(os.environ)
    # `python -m fairseq_t2r.convert` must find the package even when it is not pip-installed
    env["PYTHONPATH"] = os.pathsep.join([REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_step(step: Step) -> str:
    """Run one step, streaming its output; returns what it printed (stdout+stderr, or stderr
    alone when stdout goes to a file)."""
    print(f"\n$ {step.render()}", flush=True)
    env = subprocess_env()
    stdout_file = open(step.stdout, "w") if step.stdout else None
    cmd = ["bash", "-o", "pipefail", "-c", step.shell] if step.shell is not None else step.argv
    log = open(step.log, "w") if step.log else None
    captured = []
    try:
        proc = subprocess.Popen(
            cmd, stdout=stdout_file or subprocess.PIPE, stderr=subprocess.PIPE if stdout_file else subprocess.STDOUT,
            text=True, env=env, bufsize=1,
        )
        stream = proc.stderr if stdout_file else proc.stdout
        for line in stream:
            sys.stdout.write(line)
            captured.append(line)
            if log:
                log.write(line)
        code = proc.wait()
    finally:
        for f in (stdout_file, log):
            if f:
                f.close()
    if code != 0:
        raise T2RUserError(f"step '{step.name}' failed (exit status {code}): see its output above")
    return "".join(captured)


@contextlib.contextmanager
def quiet_logs():
    """fairseq's INFO lines (dictionary sizes, the swap summary) while the plan is checked: the
    plan prints what they say in its header."""
    loggers = [logging.getLogger(name) for name in ("fairseq", "fairseq_t2r", "fairseq_cli")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def execute(plan: Plan, out: str, swapped: str, teacher: Teacher, t2r_options: Dict[str, object],
            metric: "re.Pattern", metric_name: str, targets: Dict[str, Dict[str, float]]):
    """Run the plan's steps in order; the figures the steps report go to OUT/results.json."""
    # what a step reads must exist, or be written by an earlier step: checked before anything runs
    names = {step.name for step in plan.steps}
    if "train" in names and "convert" not in names and not os.path.exists(swapped):
        raise T2RUserError(f"{swapped} does not exist: run the convert step first (--steps convert,train)")
    for step in plan.steps:
        path = step.argv[step.argv.index("--path") + 1] if step.argv and "--path" in step.argv else None
        if path and step.name == "eval" and "train" not in names and not os.path.exists(path):
            raise T2RUserError(f"{path} does not exist: run the train step first (--steps train,eval)")
    os.makedirs(os.path.join(out, "eval"), exist_ok=True)
    results = {"paper": targets}
    for step in plan.steps:
        if step.name == "convert" and reuse_converted(swapped, teacher, t2r_options):
            print(f"\n# reusing {swapped} (this teacher, these options)", flush=True)
            continue
        found = metric.findall(run_step(step))
        if step.result and found:
            model, split = step.result
            results.setdefault(model, {})[split] = float(found[-1])
            write_json(os.path.join(out, "results.json"), results)
    measured = [(m, s, v) for m, by_split in results.items() if m != "paper" for s, v in by_split.items()]
    if measured:
        print(f"\n# {metric_name}: this run | paper")
        for model, split, value in measured:
            paper = targets.get(model, {}).get(split)
            print(f"{model:8s} {split:20s} {value:8.2f} | {'-' if paper is None else paper}")
        print(f"# written to {os.path.join(out, 'results.json')}")


def write_json(path: str, obj):
    checkpoint.atomic_write(path, json.dumps(obj, indent=2) + "\n")


def converted_from(path: str):
    """(t2r_converted_from, t2r options) of an existing t2r-convert output; (None, {}) for any other file."""
    try:
        state = checkpoint.load(path, mmap=True)  # the metadata only: the tensors stay on disk
        args, _ = checkpoint.model_config(state)
    except T2RUserError:
        return None, {}
    return state.get("t2r_converted_from"), {k: v for k, v in vars(args).items() if k.startswith("t2r_")}


def reuse_converted(path: str, teacher: Teacher, options: Dict[str, object]) -> bool:
    """True if ``path`` is this teacher converted with these options (a rerun skips the conversion)."""
    if not os.path.exists(path):
        return False
    source, saved = converted_from(path)
    wanted = {k: v for k, v in options.items() if v is not None}
    if source != teacher.path or any(saved.get(k) != v for k, v in wanted.items()):
        raise T2RUserError(
            f"{path} exists but is not {teacher.path} converted with {wanted}: delete it or choose another --out"
        )
    return True
