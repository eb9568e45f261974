"""The module-level rows of the table in ``patches/__init__.py``: torch's loader as fairseq's
checkpoint code sees it, and the guards on fairseq's checkpoint loaders and on fairseq-eval-lm."""
import contextvars
import functools
import os
import types

import torch

from ..checkpoint import is_local, not_a_checkpoint, unreadable_reason
from ..errors import T2RUserError


class TorchTrustingCheckpoints(types.ModuleType):
    """``torch`` as seen by fairseq's checkpoint code, with ``load`` defaulting to weights_only=False.
    Checkpoints are code-equivalent: load only files you trust."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def guard_load_to_cpu(load_to_cpu):
    """Every tool: a missing path, or a file torch cannot read at all -> one line."""

    @functools.wraps(load_to_cpu)
    def guarded(path, *args, **kwargs):
        if is_local(path) and not os.path.exists(path):
            raise T2RUserError(f"checkpoint {path} does not exist: check the path")
        try:
            state = load_to_cpu(path, *args, **kwargs)
        except Exception:  # only failures are inspected: a good load runs fairseq's code unchanged
            reason = unreadable_reason(path) if is_local(path) and os.path.isfile(path) else None
            if reason is not None:
                raise not_a_checkpoint(path, reason) from None
            raise
        _check_family(path, state, _ENSEMBLE_TASK.get())
        return state

    return guarded


def guard_load_ensemble(load_ensemble):
    """fairseq-eval-lm/-generate/-interactive/-validate, hub: "Model file not found" -> one line."""

    @functools.wraps(load_ensemble)
    def guarded(filenames, *args, **kwargs):
        # the task the tool set up, for the family check of each checkpoint fairseq loads inside
        token = _ENSEMBLE_TASK.set(kwargs.get("task"))
        try:
            return load_ensemble(filenames, *args, **kwargs)
        except OSError as e:
            prefix = "Model file not found: "
            if str(e).startswith(prefix):
                missing = str(e)[len(prefix):]
                raise T2RUserError(
                    f"checkpoint {missing} does not exist: check --path (several checkpoints are "
                    f"separated by '{os.pathsep}')"
                ) from None
            raise
        finally:
            _ENSEMBLE_TASK.reset(token)

    return guarded


# the task ``load_model_ensemble_and_task`` was given, while it runs (None: it sets up the checkpoint's own)
_ENSEMBLE_TASK = contextvars.ContextVar("fairseq_t2r_ensemble_task", default=None)

# the tool that runs a family's checkpoints
_TOOLS = {"lm": "fairseq-eval-lm", "mt": "fairseq-generate"}


def _check_family(path, state, task):
    """A checkpoint of one family loaded into a task of the other (a translation checkpoint in
    fairseq-eval-lm, a language model under --task translation) -> one line, before fairseq builds
    the model and fails deep inside with a traceback. Reads the state fairseq has just loaded. T2R
    models check this themselves at build time; this catches softmax checkpoints. Only for a task
    the tool set up (``task`` None: fairseq builds the checkpoint's own, which always fits)."""
    if task is None:
        return
    from fairseq.tasks.language_modeling import LanguageModelingTask
    from fairseq.tasks.translation import TranslationTask

    from ..checkpoint import FAMILY_NAMES, FAMILY_TASKS, family_of, model_config

    wanted = "lm" if isinstance(task, LanguageModelingTask) else "mt" if isinstance(task, TranslationTask) else None
    if wanted is None:
        return
    try:
        _, arch = model_config(state)
    except T2RUserError:  # neither cfg nor args: fairseq's own loading reports it
        return
    family = family_of(arch)
    if family and family != wanted and not arch.startswith("t2r_"):  # T2R models check at build time
        raise T2RUserError(f"{path} is a {FAMILY_NAMES[family]} checkpoint (arch {arch}), but this run's task builds "
                           f"a {FAMILY_NAMES[wanted]} model: use {_TOOLS[family]} (--task {FAMILY_TASKS[family]})")


def _is_t2r_trainer(trainer) -> bool:
    model = trainer.get_model() if hasattr(trainer, "get_model") else None
    return model is not None and type(model).__module__.startswith("fairseq_t2r")


def guard_load_for_training(load_for_training):
    """fairseq-train: a missing --finetune-from-model; a non-default --restore-file that does not
    exist when training a T2R model (fairseq's rules for which file it restores, checked first)."""

    @functools.wraps(load_for_training)
    def guarded(cfg, trainer, *args, **kwargs):
        suffix = getattr(trainer, "checkpoint_suffix", "") or ""
        last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        default_restore = cfg.restore_file == "checkpoint_last.pt"
        finetune = getattr(cfg, "finetune_from_model", None)
        if default_restore and finetune and not os.path.exists(last):
            if is_local(finetune) and not os.path.exists(finetune):
                raise T2RUserError(
                    f"--finetune-from-model {finetune} does not exist: pass the path of the softmax "
                    f"(or T2R) checkpoint to start from"
                )
        if not default_restore and is_local(cfg.restore_file) and _is_t2r_trainer(trainer):
            restore = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
            if not os.path.exists(restore):
                raise T2RUserError(
                    f"--restore-file {restore} does not exist (fairseq would train the T2R model from "
                    f"scratch): check the path, or use --finetune-from-model SOFTMAX.pt"
                )
        return load_for_training(cfg, trainer, *args, **kwargs)

    return guarded


def refuse_zero_token_eval():
    """Wrap ``eval_lm`` where fairseq-eval-lm's ``main`` will look it up: ``fairseq_cli.eval_lm``
    (the console script) or ``__main__`` (``python -m fairseq_cli.eval_lm``, the demo's runs).
    The plugin is imported by --user-dir inside ``main``, before ``main`` calls ``eval_lm``."""
    import sys

    for module in (sys.modules.get("fairseq_cli.eval_lm"), sys.modules.get("__main__")):
        spec = getattr(module, "__spec__", None)
        if module is None or getattr(spec, "name", None) != "fairseq_cli.eval_lm":
            continue
        if not getattr(module.eval_lm, "_fairseq_t2r_guarded", False):
            module.eval_lm = _guard_eval_lm(module.eval_lm)


def _guard_eval_lm(eval_lm):
    """``eval_lm(models, source_dictionary, batch_iterator, ...)`` that counts the tokens it scores
    (``sample["ntokens"]`` of every non-empty batch) and refuses a result of none."""

    @functools.wraps(eval_lm)
    def guarded(models, source_dictionary, batch_iterator, *args, **kwargs):
        seen = [0]

        def counted(batches):
            for sample in batches:
                if "net_input" in sample:
                    seen[0] += int(sample.get("ntokens") or 0)
                yield sample

        results = eval_lm(models, source_dictionary, counted(batch_iterator), *args, **kwargs)
        if seen[0] == 0:
            positions = min(m.max_positions() for m in models)
            raise T2RUserError(
                f"evaluated 0 tokens: every sample is longer than the model's {positions} positions "
                f"(fairseq skipped them all; --tokens-per-sample defaults to 1024) or the split is empty; "
                f"pass --tokens-per-sample {positions}"
            )
        return results

    guarded._fairseq_t2r_guarded = True
    return guarded
