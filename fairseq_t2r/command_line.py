"""fairseq command lines: parsed by fairseq's own parsers, and the architecture flags that make
``fairseq-train`` rebuild a checkpoint's model (the recipes' and the demo's teachers).

fairseq-train builds its model from ``--arch`` and the command line, never from the checkpoint it
finetunes from, so every setting where a teacher differs from what ``--arch`` gives must be spelt
out on the command line.
"""
import argparse
import contextlib
import dataclasses
from typing import Dict, List, Optional, Sequence

from .errors import T2RUserError

_flags_only = []  # non-empty inside ``command_line_only``


@contextlib.contextmanager
def command_line_only():
    """Within the block, the t2r_ architecture functions take a parse's model options from its flags
    alone and never from its --finetune-from-model checkpoint (models/from_checkpoint.py): for
    command lines that run later (plans, rebuild flags: the checkpoint they name may not exist yet
    or be replaced before the run), and while a checkpoint's own config runs through them."""
    _flags_only.append(1)
    try:
        yield
    finally:
        _flags_only.pop()


def flags_only() -> bool:
    return bool(_flags_only)


def parse_tool_args(name: str, argv: List[str]):
    """Parse ``argv`` (without the tool itself) with the parser of fairseq tool ``name``, for a
    command line that runs later: model options are what its flags and --arch give (not filled in
    from its --finetune-from-model checkpoint, which the real run will do: models/from_checkpoint.py)."""
    from fairseq import options

    parsers = {
        "fairseq-train": options.get_training_parser,
        "fairseq-eval-lm": options.get_eval_lm_parser,
        "fairseq-generate": options.get_generation_parser,
    }
    parser = parsers[name]()

    def error(message):  # fairseq's parser would print its usage and exit 2
        raise T2RUserError(f"{name} would reject its arguments: {message}")

    parser.error = error
    with command_line_only():  # the flags alone, never a --finetune-from-model checkpoint's options
        return options.parse_args_and_arch(parser, argv)


def comparable(value):
    """A setting as a checkpoint may hold it and as a command line gives it back, made comparable:
    "20,40" and [20, 40], 3 and 3.0, and "64" and 64 (fairseq declares some options, such as the
    transformer's --decoder-output-dim, without a type; its model config converts them later)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value.replace(" ", "")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def model_options(arch: str) -> Dict[str, argparse.Action]:
    """The command-line options of ``arch``'s model class, as its ``add_args`` declares them, by dest."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is None:
        raise T2RUserError(f"architecture {arch!r} is not registered with fairseq: no fairseq-train --arch builds it")
    parser = argparse.ArgumentParser(add_help=False)
    model_cls.add_args(parser)
    return {a.dest: a for a in parser._actions if a.option_strings}


def filled_in_later(parsed: argparse.Namespace) -> Dict[str, object]:
    """What fairseq-train gives the settings its parse leaves unset: the model's and the task's
    dataclass defaults, which it fills in when it turns the parse into its config. A dataclass model's
    own arch (plain transformer_lm) sets no model setting at all, so without these every setting
    would look unset. Defaults that follow another setting (``${task.tokens_per_sample}``) are left out."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    defaults = {}
    for dc in (TASK_DATACLASS_REGISTRY.get(getattr(parsed, "task", None)),
               MODEL_DATACLASS_REGISTRY.get(ARCH_MODEL_NAME_REGISTRY.get(parsed.arch))):
        if dc is None:
            continue
        config = dc()
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if not (isinstance(value, str) and value.startswith("${")):
                defaults[f.name] = value
    return defaults


def flag_for(action: Optional[argparse.Action], value) -> Optional[List[str]]:
    """The flag that sets ``value``, None if the option cannot (None, or store_true/false the wrong way)."""
    if action is None or value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return [action.option_strings[0]] if bool(value) == action.const else None
    if isinstance(value, bool):  # base_lm_architecture gives int options such as --base-shuffle False
        value = int(value)
    return [action.option_strings[0], ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]


def rebuild_flags(args: argparse.Namespace, arch: str, base_argv: List[str], keys: Optional[Sequence[str]] = None,
                  hint: Optional[str] = None) -> List[str]:
    """The options ``fairseq-train base_argv`` needs so that every key (every model option of
    ``arch`` when ``keys`` is None) has the value it has in ``args``, a checkpoint's args: none for
    a checkpoint with the architecture's defaults. ``base_argv`` names the data, the task and the
    ``--arch`` to build (``arch`` or its T2R twin); the result is checked with fairseq-train's own
    parser, and a key that no option reproduces is a one-line error that ``hint`` ends."""
    options = model_options(arch)
    keys = list(options) if keys is None else keys
    flags = []
    # one flag at a time, in ``keys`` order, re-parsing after each: settings the architecture derives
    # from another (decoder_output_dim from decoder_embed_dim) then follow it without a flag of their own
    for _ in range(len(keys) + 1):
        parsed = parse_tool_args("fairseq-train", base_argv + flags)
        later = filled_in_later(parsed)
        differing = None
        for key in keys:
            if not hasattr(args, key):
                continue
            if hasattr(parsed, key):
                have = getattr(parsed, key)
            elif key in later:
                have = later[key]
            elif key in options:
                have = options[key].default
            else:
                continue  # neither an option nor a config field: fairseq derives it, nothing to compare
            if comparable(getattr(args, key)) != comparable(have):
                differing = key, have
                break
        if differing is None:
            return flags
        key, have = differing
        want = getattr(args, key)
        flag = flag_for(options.get(key), want)
        if flag is None or flag[0] in flags:
            raise T2RUserError(
                f"the checkpoint has {key}={want!r} where fairseq-train --arch {parsed.arch} gives {have!r}, "
                f"and no option reproduces it" + (f": {hint}" if hint else "")
            )
        flags += flag
    raise AssertionError("unreachable: every round fixes one key")
