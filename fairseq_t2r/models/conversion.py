"""The swap: which attention modules become T2R, and how a softmax checkpoint fills them.

One source of truth for both the in-memory model (``convert_decoder``) and the offline
converter (``t2r-convert``): ``attention_specs`` lists every converted attention module.
"""
import contextlib
import logging
import re
from typing import Dict, List, NamedTuple

import torch
from fairseq.utils import safe_getattr

from .. import patches
from ..checkpoint import is_new_tensor, mark_state_dict
from ..config import parse_layers, t2r_option
from ..errors import T2RUserError
from ..modules.feature_maps import build_feature_map
from ..modules.states import build_state_update, option_names
from ..modules.t2r_attention import T2RAttention
from ..modules.window import build_window
from .from_checkpoint import hint

logger = logging.getLogger("fairseq_t2r")


@contextlib.contextmanager
def user_errors():
    """modules/ raise ValueError for bad arguments; at build time those come from the user's
    options (e.g. --t2r-feature-dim 0), so they stop with one line."""
    try:
        yield
    except ValueError as e:
        raise T2RUserError(str(e)) from None


class AttentionSpec(NamedTuple):
    path: str  # module path inside the model, e.g. "decoder.layers.3.self_attn"
    num_heads: int
    head_dim: int
    feature_map: str
    feature_dim: int
    state_options: dict = {}  # the state update's options (self-attention; cross keeps the additive state)
    window_options: dict = {}  # --t2r-window and its branch (self-attention only)


STATE_OPTIONS = option_names()  # state, norm and the sub-options the registered states read


def state_options(args) -> dict:
    """--t2r-state and its sub-options as ``build_state_update``'s keyword arguments."""
    return {name: t2r_option(args, "t2r_" + name) for name in STATE_OPTIONS}


def window_options(args) -> dict:
    """--t2r-window, --t2r-window-branch and --t2r-window-dropout as ``build_window``'s keyword arguments."""
    return {"window": int(t2r_option(args, "t2r_window") or 0), "window_branch": t2r_option(args, "t2r_window_branch"),
            "window_dropout": float(t2r_option(args, "t2r_window_dropout") or 0.0)}


def linear_cross(args) -> bool:
    """--t2r-cross: True to convert a translation model's cross-attention too (linear), False to
    keep the teacher's softmax cross-attention; a cross feature size only fits the former."""
    mode = t2r_option(args, "t2r_cross")
    given = safe_getattr(args, "t2r_cross_feature_dim", None)
    if mode == "softmax" and given is not None:
        raise T2RUserError(f"--t2r-cross-feature-dim {given} sizes linear cross-attention, but --t2r-cross is "
                           f"softmax: add --t2r-cross linear, or leave --t2r-cross-feature-dim out")
    return mode == "linear"


def attention_specs(args, with_cross: bool) -> List[AttentionSpec]:
    num_layers = args.decoder_layers
    heads = args.decoder_attention_heads
    head_dim = args.decoder_embed_dim // heads
    specs = []
    fmap, dim = t2r_option(args, "t2r_feature_map"), t2r_option(args, "t2r_feature_dim")
    cross = with_cross and linear_cross(args)
    cross_dim = t2r_option(args, "t2r_cross_feature_dim") or dim
    for i in parse_layers(t2r_option(args, "t2r_layers"), num_layers):
        specs.append(AttentionSpec(f"decoder.layers.{i}.self_attn", heads, head_dim, fmap, dim, state_options(args),
                                   window_options(args)))
        if cross:
            specs.append(AttentionSpec(f"decoder.layers.{i}.encoder_attn", heads, head_dim, fmap, cross_dim))
    return specs


def convert_decoder(model, args, with_cross: bool):
    """Replace the chosen MultiheadAttention modules of ``model`` by T2RAttention, in place."""
    for spec in attention_specs(args, with_cross):
        parent_path, attr = spec.path.rsplit(".", 1)
        parent = model.get_submodule(parent_path)
        with user_errors():
            t2r = T2RAttention.from_softmax(getattr(parent, attr), spec.feature_map, spec.feature_dim,
                                            state_options=spec.state_options, window_options=spec.window_options)
        setattr(parent, attr, t2r)
    if all(isinstance(layer.self_attn, T2RAttention) for layer in model.decoder.layers):
        patches.skip_future_mask(model.decoder)
    # every checkpoint saved from this model names the plugin (see errors.RequiresUserDir)
    register = getattr(model, "register_state_dict_post_hook", None) or model._register_state_dict_hook
    register(mark_state_dict)
    return model


def new_tensors(args, with_cross: bool) -> Dict[str, torch.Tensor]:
    """Freshly initialised feature-map and state-update tensors for every converted module (for
    t2r-convert)."""
    out = {}
    for spec in attention_specs(args, with_cross):
        with user_errors():
            fmap = build_feature_map(spec.feature_map, spec.num_heads, spec.head_dim, spec.feature_dim)
            update = build_state_update(spec.num_heads, spec.head_dim, fmap.output_dim, **spec.state_options)
            window = build_window(spec.num_heads, update, **spec.window_options)
        for part, module in (("feature_map", fmap), ("state_update", update), ("window", window)):
            for name, tensor in (module.state_dict().items() if module is not None else ()):
                out[f"{spec.path}.{part}.{name}"] = tensor
    return out


def summarize_names(names: List[str]) -> str:
    """'decoder.layers.{0,1,2}.self_attn.feature_map.weight, ...': one entry per tensor kind."""
    groups: Dict[str, List[str]] = {}
    for n in names:
        m = re.search(r"\.layers\.(\d+)\.", n)
        key = n if m is None else n[: m.start()] + ".layers.{}." + n[m.end():]
        groups.setdefault(key, []).append(m.group(1) if m else "")
    parts = []
    for key, idx in groups.items():
        parts.append(key.replace("{}", "{" + ",".join(idx) + "}") if "{}" in key else key)
    return ", ".join(parts)


def fill_new_tensors(model, state_dict, name: str = ""):
    """Check a loaded checkpoint against ``model`` and add the T2R tensors it lacks.

    Called from the model's ``upgrade_state_dict_named``, which fairseq runs on every checkpoint
    before its strict ``load_state_dict``: a softmax checkpoint then loads into a T2R model with
    every tensor copied unchanged and only the feature maps newly initialised. Anything else that
    does not fit stops with one line naming the first offending tensor (and, when fairseq-train
    finetunes, the flags that rebuild the checkpoint's model).
    """
    prefix = name + "." if name else ""
    args = getattr(model.decoder, "args", None) or getattr(model, "args", None)  # translation: model.args
    arch = safe_getattr(args, "arch", None) or safe_getattr(args, "_name", None) or type(model).__name__
    own = model.state_dict()
    if not any(".self_attn." in k for k in state_dict if k.startswith(prefix)):
        sample = ", ".join(k[len(prefix):] for k in list(state_dict)[:3] if k.startswith(prefix))
        raise T2RUserError(
            f"checkpoint is not a fairseq transformer: it has no attention tensors (*.self_attn.*), "
            f"its tensors are {sample}, ...; T2R converts transformer_lm and transformer checkpoints only"
        )
    if t2r_option(args, "t2r_reconvert"):
        drop_unfitting_feature_maps(own, state_dict, prefix)
    check_fit(own, state_dict, prefix, arch, args)
    new = [k for k in own if prefix + k not in state_dict]  # (check_fit: only feature maps)
    if new:
        for k in new:
            state_dict[prefix + k] = own[k].detach().clone()
        logger.info(
            f"T2R swap: copied {len(own) - len(new)} tensors from the checkpoint unchanged; "
            f"initialised {len(new)} new tensors: {summarize_names(new)}"
        )


def _misfit(arch, problem) -> T2RUserError:

    return T2RUserError(f"checkpoint does not fit --arch {arch}: {problem}{hint(arch)}")


def check_fit(own, state_dict, prefix, arch, args):
    """Every tensor of ``own`` (the model's) is in the checkpoint with its shape, or is a new
    feature-map tensor; the checkpoint has no tensor the model lacks."""
    for k, t in own.items():
        ck = state_dict.get(prefix + k)
        if ck is not None and tuple(ck.shape) != tuple(t.shape):
            raise _misfit(arch, f"tensor {k} has shape {tuple(ck.shape)} in the checkpoint but {tuple(t.shape)} in "
                                f"the model; choose the architecture, sizes and dictionary the checkpoint was trained with")
    lacking = [k for k in own if prefix + k not in state_dict and not is_new_tensor(k)]
    if lacking:
        raise _misfit(arch, f"it has no tensor {lacking[0]} ({len(lacking)} model tensors missing); is it a fairseq "
                            f"transformer of this architecture and layer count?")
    if not safe_getattr(args, "decoder_layers_to_keep", None):
        extra = [k for k in state_dict if k.startswith(prefix) and k[len(prefix):] not in own]
        if extra:
            raise _misfit(arch, f"its tensor {extra[0][len(prefix):]} has no place in the model ({len(extra)} such "
                                f"tensors); check the layer count, --t2r-layers and --t2r-feature-map (or "
                                f"--t2r-reconvert to replace the checkpoint's feature maps)")


def drop_unfitting_feature_maps(own, state_dict, prefix):
    """``--t2r-reconvert``: the checkpoint's feature maps, unless they are exactly the model's
    (names and shapes: then this is the model's own checkpoint, e.g. loaded for generation, and
    they stay), are discarded, so the swap initialises the model's afresh. Returns their number."""
    theirs = {k[len(prefix):]: tuple(t.shape) for k, t in state_dict.items() if k.startswith(prefix) and is_new_tensor(k)}
    mine = {k: tuple(t.shape) for k, t in own.items() if is_new_tensor(k)}
    if not theirs or theirs == mine:
        return 0  # none to discard (e.g. elu has no tensors), or the model's own
    for k in theirs:
        del state_dict[prefix + k]
    logger.info(f"T2R --t2r-reconvert: discarded the checkpoint's {len(theirs)} feature-map tensors "
                f"({summarize_names(list(theirs))})")
    return len(theirs)


def check_task(translation: bool, args, task):
    """A translation model under a language-modeling task (fairseq-eval-lm, or --task
    language_modeling) or the reverse: one line naming the task and architecture to use."""
    from fairseq.tasks.language_modeling import LanguageModelingTask
    from fairseq.tasks.translation import TranslationTask

    arch = safe_getattr(args, "arch", None) or safe_getattr(args, "_name", None)
    if translation and isinstance(task, LanguageModelingTask):
        raise T2RUserError(
            f"this is a translation model (arch {arch}), but the task is language_modeling: use --task "
            f"translation (fairseq-generate, fairseq-interactive, fairseq-train --arch {arch}); fairseq-eval-lm "
            f"scores language models only"
        )
    if not translation and isinstance(task, TranslationTask):
        raise T2RUserError(
            f"this is a language model (arch {arch}), but the task is translation: use --task language_modeling "
            f"(fairseq-eval-lm, fairseq-generate, fairseq-train --arch {arch})"
        )
