"""``fairseq-train --arch t2r_X --finetune-from-model CKPT``: the model options the command line
leaves out are the checkpoint's, not the architecture's defaults.

fairseq-train builds its model from the command line alone and loads ``--finetune-from-model``
afterwards, so a checkpoint whose sizes differ from ``--arch``'s defaults used to stop with a
shape error, and a converted checkpoint's T2R options (``t2r-convert --t2r-feature-map elu``)
were silently replaced by the defaults. The one place that sees the parsed command line before
the model is built, and still knows which options were given, is the architecture function
(fairseq's parser leaves every model option that was not given unset): the ``t2r_`` architectures
call :func:`take_from_checkpoint` there, before they fill in their own defaults.

- model options not given (sizes, adaptive input, the T2R swap options of a converted
  checkpoint) take the checkpoint's values, logged in one line; regularisation and memory knobs
  (dropout, layerdrop, activation checkpointing, positions) stay the command line's;
- a T2R option given that contradicts the checkpoint's stops with one line naming both values,
  unless ``--t2r-reconvert`` says the feature maps are to be replaced;
- a translation checkpoint under an LM architecture (or the reverse), or an architecture of the
  family other than the checkpoint's own (``t2r_transformer_lm_wiki103`` on a plain
  ``transformer_lm``), stops with one line naming the ``--task``/``--arch`` to use.
"""
import copy
import logging
import os
import zipfile
from dataclasses import fields
from typing import Dict

from .. import checkpoint
from ..checkpoint import FAMILY_NAMES, FAMILY_TASKS, family_of
from ..command_line import command_line_only, comparable, filled_in_later, flag_for, flags_only, model_options
from ..config import CrossSwapConfig, parse_layers, t2r_option
from ..errors import T2RUserError

logger = logging.getLogger("fairseq_t2r")

# options that are not the architecture: what the finetuning run chooses, never the checkpoint
NOT_TAKEN_PARTS = ("dropout", "layerdrop", "quant_noise", "layers_to_keep", "activations", "min_params_to_wrap",
                   "positions", "tokens_per_sample", "t2r_trainable", "t2r_reconvert")
# the swap options compared with a T2R checkpoint's (their dests)
SWAP_KEYS = tuple(f.name for f in fields(CrossSwapConfig) if f.name.startswith("t2r_"))


# what the last command line finetunes from: (path, checkpoint args, arch), for the fit error's hint
SOURCE: Dict[str, object] = {}


# set on a parse once its checkpoint was seen: fairseq runs a translation architecture's function
# again when it builds the model from that same Namespace (in-process builders such as the recipes'
# checks do), and on a saved config at every load
SEEN = "_t2r_finetune_checked"


def from_command_line(args) -> bool:
    """True, once, for fairseq's parse of a command line: a config rebuilt from a saved checkpoint
    (or fairseq's own ``cfg.model``) carries ``_name``; the parse does not."""
    if hasattr(args, "_name") or getattr(args, SEEN, False):
        return False
    if getattr(args, "finetune_from_model", None):  # (only then: other Namespaces stay as they are)
        setattr(args, SEEN, True)
    return not flags_only()


def read_checkpoint_config(path):
    """(args, arch) of the checkpoint at ``path``; its tensors stay on disk where torch allows."""
    with command_line_only():
        state = checkpoint.load(path, mmap=zipfile.is_zipfile(path))
        return checkpoint.model_config(state)




def take_from_checkpoint(args, base_arch_fn):
    """At fairseq-train's parse (see the module docstring); anything else passes through."""
    if not from_command_line(args):
        return
    SOURCE.clear()
    path = getattr(args, "finetune_from_model", None)
    if not path or not checkpoint.is_local(path) or not os.path.isfile(path):
        return  # (a missing file: the load guard of patches.py names it)
    ck_args, ck_arch = read_checkpoint_config(path)
    ck_family, family = family_of(ck_arch), family_of(args.arch)
    if ck_family is None:
        return  # not a transformer: the fit check names the checkpoint's tensors when it loads
    check_family(path, ck_arch, ck_family, args.arch, family)
    check_swap_options(args, path, ck_args, ck_arch)
    taken = fill_options(args, ck_args, base_arch_fn)
    SOURCE.update(path=path, args=ck_args, arch=ck_arch)
    if taken:
        logger.info(f"T2R: model options from --finetune-from-model {path} (not given on the command line): "
                    + " ".join(taken))


def twin_of(arch: str) -> str:
    return arch if arch.startswith("t2r_") else "t2r_" + arch


def check_family(path, ck_arch, ck_family, arch, family):
    twin = twin_of(ck_arch)
    if ck_family != family:
        raise T2RUserError(
            f"{path} is a {FAMILY_NAMES[ck_family]} checkpoint (arch {ck_arch}), but --arch {arch} builds a "
            f"{FAMILY_NAMES[family]} model: use --task {FAMILY_TASKS[ck_family]} --arch {twin}"
        )
    generic = {"t2r_transformer_lm", "t2r_transformer"}
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY as models

    # a generic arch builds only its own model: t2r_transformer is no BART (heads, BERT init)
    if arch != twin and (arch not in generic or models.get(arch) != models.get(twin)):
        raise T2RUserError(
            f"--arch {arch} does not match {path}, a {ck_arch} checkpoint ({arch} has other defaults, e.g. "
            f"its sizes or adaptive input): use --arch {twin}; the sizes are taken from the checkpoint"
        )


def _effective(args, key, num_layers):
    """A swap option as the model uses it: layer lists resolved, cross size defaulted."""
    if key == "t2r_layers":
        return parse_layers(t2r_option(args, key), num_layers)
    if key == "t2r_cross_feature_dim":
        return t2r_option(args, key) or t2r_option(args, "t2r_feature_dim")
    return t2r_option(args, key)


def check_swap_options(args, path, ck_args, ck_arch):
    """A T2R option given on the command line must agree with a converted checkpoint's, unless
    --t2r-reconvert: otherwise the user trains another model than the one they converted."""
    if not ck_arch.startswith("t2r_") or getattr(args, "t2r_reconvert", False):
        return
    num_layers = getattr(ck_args, "decoder_layers", None) or 0
    for key in SWAP_KEYS:
        if not hasattr(args, key) or ("cross" in key and family_of(ck_arch) != "mt"):
            continue
        if key == "t2r_cross_feature_dim" and t2r_option(ck_args, "t2r_cross") == "softmax":
            continue  # no linear cross-attention to size (the build refuses the size with softmax)
        mine, theirs = _effective(args, key, num_layers), _effective(ck_args, key, num_layers)
        if comparable(mine) != comparable(theirs):
            flag = "--" + key.replace("_", "-")
            raise T2RUserError(
                f"{flag} {_show(args, key)} contradicts {path}, converted with {flag} "
                f"{_show(ck_args, key)}: leave {flag} out to finetune the checkpoint's model, "
                f"or add --t2r-reconvert to discard its feature maps and convert its attention afresh"
            )


def _show(args, key) -> str:
    value = t2r_option(args, key)
    if value is None:  # unset: all layers; the cross-attention's feature size follows --t2r-feature-dim
        return "all" if key == "t2r_layers" else str(t2r_option(args, "t2r_feature_dim"))
    return str(value)


def _arch_gives(args, base_arch_fn) -> dict:
    """What --arch alone would set, for the log: its architecture function's values on a copy of
    the parse, over the dataclass defaults fairseq-train fills in later (the plain
    t2r_transformer_lm sets none itself)."""
    given = copy.copy(args)
    base_arch_fn(given)
    return {**filled_in_later(args), **vars(given)}


def fill_options(args, ck_args, base_arch_fn):
    """Set every model option of ``args.arch`` that the command line left unset to the checkpoint's
    value; return the flags of those that differ from what --arch gives (for the log)."""
    options = model_options(args.arch)
    before = _arch_gives(args, base_arch_fn)
    taken = []
    for key, action in options.items():
        if hasattr(args, key) or any(p in key for p in NOT_TAKEN_PARTS) or not hasattr(ck_args, key):
            continue
        value = getattr(ck_args, key)
        if isinstance(value, str) and value.startswith("${"):
            continue  # an interpolation of the task's settings: fairseq resolves it
        if key == "t2r_norm" and not accepts_norm(getattr(args, "t2r_state", None), value):
            continue  # a --t2r-state given (with --t2r-reconvert) that refuses it: the state's own norm
        setattr(args, key, value)
        if comparable(value) != comparable(before.get(key)):
            taken += flag_for(action, value) or [f"{key}={value}"]
    return taken


def accepts_norm(state, norm) -> bool:
    """Whether the state update ``state`` (None: not given) takes ``--t2r-norm norm``."""
    from ..modules.states import STATE_UPDATES

    cls = STATE_UPDATES.get(str(state)) if state is not None else None
    return cls is None or norm is None or str(norm) in cls.norms


def hint(arch) -> str:
    """For a checkpoint that does not fit: the exact flags that rebuild the --finetune-from-model
    checkpoint the command line named (empty when it named none, or they cannot be spelt)."""
    source = dict(SOURCE)
    if not source:
        return ""
    from ..command_line import rebuild_flags

    twin = twin_of(source["arch"])
    task = FAMILY_TASKS.get(family_of(twin))
    try:
        flags = rebuild_flags(source["args"], source["arch"], [os.curdir, "--task", task, "--arch", twin])
    except T2RUserError:
        return ""
    shown = " ".join(["--arch", twin, *flags])
    return (f"; {shown} rebuilds {source['path']}: leave the size flags out (with --finetune-from-model "
            f"they are the checkpoint's) or pass exactly these")
