"""Stage one in one command: ``t2r-convert SOFTMAX.pt OUT.pt --transfer-data DATA --transfer-updates N``.

Runs stock fairseq-train (in this process, ``fairseq_cli.train.main``) with
``--criterion t2r_attention_transfer``, finetuning from the freshly swapped checkpoint into a
temporary directory next to OUT. The model and task options come from the checkpoint itself
(architecture, sizes, ``--tokens-per-sample``, languages, ...), so the user names only the data;
fairseq-train options given after a ``--`` on t2r-convert's command line win over both. Only the
feature maps train; the result is the plain swap's checkpoint with its feature-map tensors
replaced by the trained ones, so it loads wherever the plain swap does and every other tensor
stays the softmax model's, bit for bit.
"""
import argparse
import contextlib
import io
import logging
import os
import shlex
import shutil
from dataclasses import fields

import torch

from . import checkpoint, patches
from .config import TransferConfig
from .config import add_options as add_config_options
from .errors import T2RUserError

logger = logging.getLogger("fairseq_t2r")
USER_DIR = os.path.dirname(os.path.abspath(__file__))
# the transfer options' defaults (config.TransferConfig's fields), by the names the training run uses
DEFAULTS = {"lr": TransferConfig.transfer_lr, "max_tokens": TransferConfig.transfer_max_tokens,
            "xent_weight": TransferConfig.transfer_xent_weight}


def add_options(parser):
    g = parser.add_argument_group("attention transfer (stage one; runs fairseq-train when --transfer-data is given)")
    # not given -> None, whatever the field's default: requested() tells a run that asked for transfer by it
    add_config_options(g, TransferConfig, unset_is_none=True)
    parser.epilog = ("Attention transfer passes every option after a '--' to fairseq-train, e.g. "
                     "t2r-convert softmax.pt out.pt --transfer-data DATA --transfer-updates 200 -- --fp16 --update-freq 4. "
                     f"{patches.HOW_TO_SEE}.")


def split_argv(argv):
    """(t2r-convert's own options, fairseq-train options after the first '--')."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def requested(args) -> bool:
    """Whether the command line asked for attention transfer: options after '--', or any transfer option."""
    return bool(args.train_options) or any(getattr(args, f.name) is not None for f in fields(TransferConfig)
                                           if f.name != "_name")


def check_options(args):
    if not args.transfer_data or args.transfer_updates is None:
        what = "options after '--' (fairseq-train options for attention transfer)" if args.train_options else "attention transfer"
        raise T2RUserError(f"{what}: give both --transfer-data DATA_BIN and --transfer-updates N")
    if args.transfer_updates <= 0:
        raise T2RUserError(f"--transfer-updates must be positive, got {args.transfer_updates}")
    if not os.path.isdir(args.transfer_data):
        raise T2RUserError(f"--transfer-data {args.transfer_data} is not a directory: pass the binarized data directory (fairseq-preprocess --destdir)")
    for name in ("transfer_lr", "transfer_max_tokens"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise T2RUserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


def _dests(add_args):
    """{dest: option strings} of the options a model or task class adds."""
    p = argparse.ArgumentParser(add_help=False)
    add_args(p)
    return {a.dest: a.option_strings for a in p._actions}


def _parse_quietly(parser_fn, argv):
    """fairseq's own parser; an argparse error becomes one line instead of usage + error."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser_fn(argv)
    except SystemExit as e:
        if isinstance(e, T2RUserError) or e.code == 0:
            raise
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        msg = lines[-1].split("error: ", 1)[-1] if lines else f"exit status {e.code}"
        raise T2RUserError(f"fairseq-train rejected the attention transfer options: {msg}") from None


def training_cfg(swapped_path, save_dir, args, seed):
    """fairseq-train's config for the transfer run: our options, then the checkpoint's model and
    task options (unless the options after '--' set them), then the options after '--'."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    state = checkpoint.load(swapped_path)
    saved_model, arch = checkpoint.model_config(state)
    saved_task = checkpoint.task_config(state)
    task = args.task or getattr(saved_task, "_name", None) or getattr(saved_task, "task", None)
    if task not in TASK_REGISTRY:
        raise T2RUserError(f"--task {task!r} is not a fairseq task: pass e.g. --task language_modeling or --task translation")
    extra = list(args.train_options)
    updates = args.transfer_updates
    argv = [
        args.transfer_data, "--user-dir", USER_DIR, "--task", task, "--arch", arch,
        "--criterion", "t2r_attention_transfer",
        "--t2r-transfer-xent-weight", str(args.transfer_xent_weight or DEFAULTS["xent_weight"]),
        "--finetune-from-model", swapped_path, "--save-dir", save_dir,
        "--optimizer", "adam", "--lr", str(args.transfer_lr or DEFAULTS["lr"]), "--lr-scheduler", "fixed",
        "--max-update", str(updates), "--max-tokens", str(args.transfer_max_tokens or DEFAULTS["max_tokens"]),
        "--seed", str(seed), "--disable-validation", "--no-epoch-checkpoints", "--no-save-optimizer-state",
        # no loader worker: in-process, a worker only adds a resource_sharer thread whose teardown
        # can print a ConnectionResetError traceback when training ends (seen in CI)
        "--num-workers", "0",
        "--log-format", "simple", "--log-interval", str(max(1, min(100, updates // 10))),
        *extra,  # last: the user's options win
    ]
    parsed = _parse_quietly(lambda a: options.parse_args_and_arch(options.get_training_parser(), a), argv)
    given = {tok.split("=", 1)[0] for tok in extra if tok.startswith("-")}
    for source, dests in ((saved_task, _dests(TASK_REGISTRY[task].add_args)),
                          (saved_model, _dests(ARCH_MODEL_REGISTRY[arch].add_args))):
        for dest, flags in dests.items():
            if dest in ("data", "_name", "arch") or given.intersection(flags) or not hasattr(source, dest):
                continue
            value = getattr(source, dest)
            if isinstance(value, str) and value.startswith("${"):
                continue  # an interpolation (e.g. tokens_per_sample from the task): fairseq resolves it
            setattr(parsed, dest, value)
    return convert_namespace_to_omegaconf(parsed), argv


def run(swapped_path, work_dir, args, seed):
    """Train the feature maps of ``swapped_path``; returns the trained model state dict."""
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli.train import main as train_main

    # fairseq-train's --user-dir import finds the package already imported (by t2r-convert, before
    # fairseq) and skips it: register the models and criteria here
    from . import criterions, models  # noqa: F401

    save_dir = os.path.join(work_dir, "train")
    cfg, argv = training_cfg(swapped_path, save_dir, args, seed)
    logger.info("attention transfer: fairseq-train " + " ".join(shlex.quote(a) for a in argv)
                + "  (+ the checkpoint's model and task options)")
    try:
        distributed_utils.call_main(cfg, train_main)
    except FileNotFoundError as e:  # e.g. "Dataset not found: train (DATA)"
        raise T2RUserError(f"attention transfer could not read its data: {e}; pass a binarized data directory with a train split") from None
    last = os.path.join(save_dir, "checkpoint_last.pt")
    if not os.path.isfile(last):
        raise T2RUserError(f"attention transfer wrote no checkpoint in {save_dir}: see fairseq-train's log above")
    return checkpoint.load(last)["model"]


def merge_feature_maps(state, trained):
    """Put the trained feature maps into the swapped checkpoint ``state``; returns their names.
    Every other tensor stays the softmax model's (training may have cast them, e.g. --fp16)."""
    model = state["model"]
    if set(model) != set(trained):
        odd = sorted(set(model) ^ set(trained))
        raise T2RUserError(f"the attention transfer run saved other tensors than the swapped checkpoint holds (e.g. {odd[0]})")
    names = [k for k in model if checkpoint.is_new_tensor(k)]
    for k in model:
        if checkpoint.is_new_tensor(k):
            model[k] = trained[k].to(model[k].dtype)
        elif trained[k].dtype == model[k].dtype and not torch.equal(trained[k], model[k]):
            raise T2RUserError(f"attention transfer changed {k}, which must stay frozen; nothing was written")
    return names


@contextlib.contextmanager
def work_dir_beside(output):
    """A scratch directory next to OUTPUT (checkpoints are big; the output's disk must hold them
    anyway), removed afterwards -- also after an error."""
    parent = os.path.dirname(os.path.abspath(output))
    prefix = os.path.join(parent, f".{os.path.basename(output)}.transfer-")
    checkpoint.remove_left_by_dead(prefix)  # left by a run that was killed
    path = prefix + str(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
