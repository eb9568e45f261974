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
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .command_line import parse_tool_args, rebuild_flags
from .errors import T2RUserError

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


# --------------------------------------------------------------------------- the teacher checkpoint

@dataclass
class Teacher:
    path: str
    state: dict
    args: argparse.Namespace  # arch defaults applied
    arch: str


def load_teacher(path: str, accepted: Sequence[str], wanted: str) -> Teacher:
    """Load a softmax checkpoint (pre-hydra ``args`` or ``cfg``) and check its ``--arch``."""
    from . import models  # noqa: F401  registers the t2r_ twins the checks below look up
    from .convert import load_checkpoint_file, model_args

    state = load_checkpoint_file(path)
    args, arch = model_args(state)
    if arch is None:
        raise T2RUserError(f"{path} names no --arch in its saved args: it was not written by fairseq-train")
    if arch.startswith("t2r_"):
        raise T2RUserError(
            f"{path} is already a T2R model ({arch}): pass the softmax checkpoint the recipe converts"
        )
    if arch not in accepted:
        raise T2RUserError(
            f"{path} is a {arch} model, not {wanted} ({', '.join(accepted)}): this recipe's "
            f"hyperparameters and targets are for that model; pass its checkpoint"
        )
    return Teacher(os.path.abspath(path), state, args, arch)


def vocab_size(state_dict: dict, prefix: str) -> Optional[int]:
    """Rows of the token embedding under ``prefix`` (plain or adaptive input), None if absent."""
    plain = state_dict.get(f"{prefix}.weight")
    if plain is not None:
        return plain.shape[0]
    bands = [k for k in state_dict if re.fullmatch(re.escape(prefix) + r"\.embeddings\.\d+\.0\.weight", k)]
    return sum(state_dict[k].shape[0] for k in bands) if bands else None


def describe(teacher: Teacher) -> str:
    a = teacher.args
    enc = getattr(a, "encoder_layers", None) if "encoder.embed_tokens.weight" in teacher.state["model"] else None
    layers = f"{enc}+{a.decoder_layers} layers" if enc else f"{a.decoder_layers} layers"
    return (f"{teacher.arch}, {layers}, {a.decoder_embed_dim} dim, {a.decoder_ffn_embed_dim} ffn, "
            f"{a.decoder_attention_heads} heads")


# --------------------------------------------------------------------------- data directory

def load_dictionary(data: str, name: str):
    from fairseq.data import Dictionary

    path = os.path.join(data, name)
    if not os.path.isfile(path):
        raise T2RUserError(
            f"data directory {data} has no {name}: pass the fairseq-preprocess output directory "
            f"(binarized with the released model's dictionary, see the recipe's README)"
        )
    try:
        return Dictionary.load(path)
    except Exception as e:  # a truncated or hand-edited dictionary
        raise T2RUserError(f"{path} is not a fairseq dictionary ({type(e).__name__}: {str(e)[:80]})")


def check_data_dir(data: str):
    if not os.path.isdir(data):
        raise T2RUserError(f"data directory {data} does not exist: pass the fairseq-preprocess --destdir")


def check_split(data: str, split: str, prefixes: Sequence[str], purpose: str):
    """The binarized split exists under one of ``prefixes`` (``.bin`` + ``.idx``)."""
    for prefix in prefixes:
        base = os.path.join(data, prefix)
        if os.path.isfile(base + ".bin") and os.path.isfile(base + ".idx"):
            return
    raise T2RUserError(
        f"data directory {data} has no {split} split ({prefixes[0]}.bin/.idx), which {purpose} reads: "
        f"binarize it with fairseq-preprocess (see the recipe's README)"
    )


def check_vocab(teacher: Teacher, dictionary, dict_path: str, prefix: str):
    rows = vocab_size(teacher.state["model"], prefix)
    if rows is not None and rows != len(dictionary):
        raise T2RUserError(
            f"{dict_path} has {len(dictionary)} entries but the checkpoint's {prefix} has {rows} rows: "
            f"the data was binarized with another dictionary; rerun fairseq-preprocess with the released "
            f"model's dictionary (--srcdict, see the recipe's README)"
        )


# --------------------------------------------------------------------------- GPUs and batch size

def gpu_count(requested: Optional[int], dry_run: bool, needs_gpu: bool, cpu: bool = False) -> int:
    import torch

    if requested is not None and requested < 1:
        raise T2RUserError(f"--gpus {requested}: pass the number of GPUs the training runs on (1 or more)")
    if cpu:  # a smoke test of the commands on a stand-in model: one process, no GPU
        if requested not in (None, 1):
            raise T2RUserError(f"--cpu runs one process: drop --gpus {requested}")
        return 1
    visible = torch.cuda.device_count()
    if requested is None:
        if visible == 0 and not needs_gpu:  # e.g. --steps convert: no GPU to plan for
            return 1
        if visible == 0:
            raise T2RUserError(
                "no CUDA GPU is visible: pass --gpus N (with --dry-run) to plan for a machine with N GPUs"
            )
        return visible
    if not dry_run and needs_gpu and requested != visible:
        raise T2RUserError(
            f"--gpus {requested} but {visible} CUDA GPUs are visible, and fairseq-train uses every visible "
            f"GPU: set CUDA_VISIBLE_DEVICES or pass --gpus {visible}"
            if visible else
            f"--gpus {requested} but no CUDA GPU is visible here: run on the GPU machine, or add --dry-run "
            f"to print the commands"
        )
    return requested


def update_freq(batches_per_update: int, gpus: int):
    """--update-freq that keeps ``gpus * update_freq`` (GPU-batches per update) at the recipe's value."""
    freq = max(1, math.ceil(batches_per_update / gpus))
    note = None
    if freq * gpus != batches_per_update:
        note = (f"{batches_per_update} GPU-batches per update is not a multiple of {gpus} GPUs: "
                f"--update-freq {freq} gives {freq * gpus} (a slightly larger batch)")
    return freq, note


# --------------------------------------------------------------------------- the fairseq-train command

def model_flags(teacher: Teacher, base_argv: List[str], keys: Sequence[str]) -> List[str]:
    """The options ``fairseq-train base_argv`` needs so that its model is the teacher's, among
    ``keys``: none for a checkpoint with the architecture's defaults (as the released ones are
    expected to be), all the small dimensions for the test stand-ins, the layer count of a 32-layer
    variant. The teacher's dropout settings are carried over the same way."""
    return rebuild_flags(teacher.args, teacher.arch, base_argv, keys,
                         hint="this recipe supports the released architecture only")


def check_finetune_start(argv: List[str], teacher: Teacher):
    """Build the model of ``fairseq-train argv`` and load the teacher into it, as
    ``--finetune-from-model`` will: every teacher tensor must fit; only feature maps are new.
    Returns (tensors copied, tensors new)."""
    from fairseq import tasks

    args = parse_tool_args("fairseq-train", argv)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    state = dict(teacher.state["model"])  # the hook adds feature maps to the dict it is given
    model.load_state_dict(state, strict=True)
    new = [k for k in model.state_dict() if k not in teacher.state["model"]]
    if not new or any(".feature_map." not in k for k in new):
        raise T2RUserError(f"fairseq-train --arch {args.arch} would not convert the checkpoint's attention")
    return len(teacher.state["model"]), len(new)


def release(teacher: Teacher):
    """Drop the checkpoint's tensors once the plan is checked: the run only needs its path, and
    would otherwise hold a model's worth of memory for as long as the training lasts."""
    teacher.state = None


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
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def converted_from(path: str):
    """(t2r_converted_from, t2r options) of an existing t2r-convert output."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:
        return None, {}
    args = state.get("args")
    options = {k: v for k, v in vars(args).items() if k.startswith("t2r_")} if args is not None else {}
    if not options and state.get("cfg") is not None:
        options = {k: v for k, v in dict(state["cfg"]["model"]).items() if str(k).startswith("t2r_")}
    return state.get("t2r_converted_from"), options


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
