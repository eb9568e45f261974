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
from typing import Dict, List, Optional, Sequence

from . import checkpoint
from .command_line import parse_tool_args  # noqa: F401  (the recipes' scripts call recipes.parse_tool_args)
from .errors import T2RUserError

# the checks, under the names the recipes' scripts use (recipes.load_teacher, ...)
from .recipe_checks import (  # noqa: F401
    Teacher,
    check_data_dir,
    check_finetune_start,
    check_split,
    check_vocab,
    describe,
    gpu_count,
    load_dictionary,
    load_teacher,
    model_flags,
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


def parse_steps(spec: str, choices: Sequence[str]) -> List[str]:
    steps = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in steps if s not in choices]
    if bad or not steps:
        raise T2RUserError(f"--steps {spec!r}: choose from {','.join(choices)}")
    return [s for s in choices if s in steps]


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
