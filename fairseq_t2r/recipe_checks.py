"""The options every recipe takes, and the checks it runs before anything is written (see
``recipes.py``): the teacher checkpoint is of the expected architecture, the data directory holds
its dictionary and the splits the commands read, the GPU count and batch size add up, and the
planned ``fairseq-train`` command builds a T2R model into which every teacher tensor loads. Each
mistake stops with one line ``fairseq_t2r: error: ...``.
"""
import argparse
import math
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from . import checkpoint
from .command_line import parse_tool_args, rebuild_flags
from .errors import T2RUserError

# --------------------------------------------------------------------------- the options

def parse_steps(spec: str, choices: Sequence[str]) -> List[str]:
    steps = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in steps if s not in choices]
    if bad or not steps:
        raise T2RUserError(f"--steps {spec!r}: choose from {','.join(choices)}")
    return [s for s in choices if s in steps]


def checked_steps(args: argparse.Namespace, choices: Sequence[str]) -> List[str]:
    """--steps as a list in ``choices``' order, once it and --feature-dim are checked."""
    steps = parse_steps(args.steps, choices)
    if args.feature_dim < 1:
        raise T2RUserError(f"--feature-dim {args.feature_dim}: pass a positive feature size")
    return steps


def add_plan_options(p: argparse.ArgumentParser, steps: Sequence[str]):
    """--gpus, --dry-run, --steps and --feature-map, as every recipe's parser has them."""
    from .modules.feature_maps import FEATURE_MAPS

    p.add_argument("--gpus", type=int, default=None, help="GPUs the training runs on (default: those visible); sets --update-freq")
    p.add_argument("--dry-run", action="store_true", help="check everything and print the commands; run nothing, write nothing")
    p.add_argument("--steps", default=",".join(steps), help=f"comma-separated subset of {','.join(steps)}")
    p.add_argument("--feature-map", default="t2r", choices=sorted(FEATURE_MAPS),
                   help="--t2r-feature-map (default t2r, the paper's)")


def add_training_switches(p: argparse.ArgumentParser):
    """--no-fp16, --cpu and --train-extra, last in every recipe's parser."""
    p.add_argument("--no-fp16", action="store_true", help="train in fp32")
    p.add_argument("--cpu", action="store_true",
                   help="smoke-test the commands on CPU (a stand-in model): --cpu for every fairseq tool, no fp16")
    p.add_argument("--train-extra", default="", help="more fairseq-train options, appended last (quoted string)")


# --------------------------------------------------------------------------- the teacher checkpoint

@dataclass
class Teacher:
    path: str
    state: dict
    args: argparse.Namespace  # arch defaults applied
    arch: str


def load_teacher(path: str, accepted: Sequence[str], wanted: str) -> Teacher:
    """Load a softmax checkpoint (pre-hydra ``args`` or ``cfg``) and check its ``--arch``."""
    from . import criterions, models  # noqa: F401  registers what the planned commands name

    state = checkpoint.load(path)
    args, arch = checkpoint.model_config(state)
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
        raise T2RUserError(f"{path} is not a fairseq dictionary ({type(e).__name__}: {str(e)[:80]})") from None


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


def batch_lines(gpus: int, freq: int, note: Optional[str], max_tokens: int, reference: str) -> List[str]:
    """The plan header's batch line (with the batch ``reference`` it follows), and update_freq's note."""
    return [f"batch: {gpus} GPU(s) x --update-freq {freq} x --max-tokens {max_tokens} = "
            f"{gpus * freq * max_tokens} tokens per update ({reference})", *([f"note: {note}"] if note else [])]


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
    if not new or not all(checkpoint.is_new_tensor(k) for k in new):
        raise T2RUserError(f"fairseq-train --arch {args.arch} would not convert the checkpoint's attention")
    return len(teacher.state["model"]), len(new)


def release(teacher: Teacher):
    """Drop the checkpoint's tensors once the plan is checked: the run only needs its path, and
    would otherwise hold a model's worth of memory for as long as the training lasts."""
    teacher.state = None
