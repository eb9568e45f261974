"""The tasks fairseq's multilingual releases run under, checked when a T2R model is built.

A model finetuned under ``translation_multi_simple_epoch`` (M2M-100, mBART-50) or
``translation_from_pretrained_bart`` (mBART finetuned for one pair) has language tokens in its
dictionary and was trained to read them at fixed places (``--encoder-langtok``,
``--decoder-langtok``; mBART's ``[xx_XX]`` after the source and as the target's first token).
Under another task, or with a language option left out, fairseq builds the model anyway and
translates without them: wrong output, or a shape error deep in loading. So a T2R model built
under a task other than its checkpoint's, or without the language settings the checkpoint was
trained with, stops with one line naming the flags to use. The checkpoint's settings are those
of ``--finetune-from-model`` (fairseq-train), else the model's own config (a pre-hydra checkpoint
keeps every option of its training run there).
"""
from argparse import Namespace

from ..errors import T2RUserError

MULTI = "translation_multi_simple_epoch"
MBART = "translation_from_pretrained_bart"
# per task: the settings that must be the checkpoint's, by dest
LANGUAGE_SETTINGS = {MULTI: ("encoder_langtok", "decoder_langtok"), MBART: ("langs",)}


def task_name(task) -> str:
    from fairseq.tasks import TASK_REGISTRY

    return next((name for name, cls in TASK_REGISTRY.items() if cls is type(task)), type(task).__name__)


def task_settings(task):
    """A task's own settings: ``args`` for the legacy tasks, ``cfg`` for dataclass ones."""
    return getattr(task, "args", None) or getattr(task, "cfg", None) or Namespace()


def trained_settings(args):
    """The settings of the checkpoint the model is built for (see the module docstring)."""
    from .from_checkpoint import SOURCE

    source = getattr(args, "finetune_from_model", None)
    if source and SOURCE.get("path") == source:
        return SOURCE["args"]
    return args


def _flag(dest) -> str:
    return "--" + dest.replace("_", "-")


def _spell(settings, dest) -> str:
    value = getattr(settings, dest, None)
    if value is None or value is False:
        return f"no {_flag(dest)}"
    if value is True:
        return _flag(dest)
    return f"{_flag(dest)} {','.join(value) if isinstance(value, (list, tuple)) else value}"


def release_flags(trained) -> str:
    """The command-line options that give the checkpoint's task and language settings."""
    name = getattr(trained, "task", None)
    parts = [f"--task {name}"]
    dests = ("lang_pairs", "encoder_langtok", "decoder_langtok", "lang_dict") if name == MULTI else ("langs",)
    for dest in dests:
        if getattr(trained, dest, None) not in (None, False):
            parts.append(_spell(trained, dest))
    return " ".join(parts)


def check_release_task(args, task):
    """At a T2R translation model's build: the run's task and language settings against the checkpoint's."""
    if task is None:
        return
    trained = trained_settings(args)
    wanted = getattr(trained, "task", None)
    if wanted not in LANGUAGE_SETTINGS:
        return
    arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    running = task_name(task)
    if running != wanted:
        raise T2RUserError(
            f"this model (arch {arch}) was trained with --task {wanted} and language tokens, but the task is "
            f"{running}: use {release_flags(trained)}"
        )
    mine = task_settings(task)
    for dest in LANGUAGE_SETTINGS[wanted]:
        have, want = getattr(mine, dest, None), getattr(trained, dest, None)
        if _same(have, want):
            continue
        raise T2RUserError(
            f"--task {wanted}: this model (arch {arch}) was trained with {_spell(trained, dest)}, but this run has "
            f"{_spell(mine, dest)}: pass {_spell(trained, dest)} (the checkpoint's settings: {release_flags(trained)})"
        )


def _same(a, b) -> bool:
    norm = [",".join(v) if isinstance(v, (list, tuple)) else (v or None) for v in (a, b)]
    return norm[0] == norm[1]
