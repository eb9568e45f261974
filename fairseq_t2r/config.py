"""Every T2R command-line option, declared once, as a dataclass field with its help text.

- :class:`T2RConfig` (LM) and :class:`T2RCrossConfig` (translation): the model options. The
  models' configs inherit them, so they appear in ``fairseq-train --help`` under the model's
  group and are saved in every checkpoint's cfg.
- :class:`ConvertConfig`: ``t2r-convert``'s options. It inherits the swap's fields
  (:class:`SwapConfig`, :class:`CrossSwapConfig`) that the model options inherit too, so
  ``--t2r-feature-map`` is one field for fairseq-train and t2r-convert alike.
- :class:`TransferConfig`: stage one's attention-transfer options (``t2r-convert --transfer-*``).

:func:`add_options` turns a config into argparse options with fairseq's own
``gen_parser_from_dataclass``. The demo's options and training
presets are the demo's own (``demo/options.py``, ``demo/presets.py``): this module is the
library's, and imports no tool.
"""
from dataclasses import dataclass, field, fields
from typing import List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.utils import safe_getattr

from .errors import T2RUserError
from .modules.feature_maps import FEATURE_MAPS
from .modules.states import NORMS, STATE_UPDATES, option_choices, state_names
from .modules.window import WINDOW_BRANCHES

TRAINABLE_CHOICES = ["all", "attention", "feature-map"]
CROSS_CHOICES = ["softmax", "linear"]
# how t2r-convert chooses the layers kept softmax (layer_select.py measures them)
SELECT_RULES = ("last", "even", "transfer", "kl")


# ----------------------------------------------------------------------------- the swap
@dataclass
class SwapConfig(FairseqDataclass):
    """What replacing decoder self-attention needs (both model families, and t2r-convert)."""

    t2r_feature_map: ChoiceEnum(sorted(FEATURE_MAPS)) = field(
        default="t2r",
        metadata={"help": "feature map of the linear attention: t2r (learned MLP + ReLU, the paper), "
                  "elu (elu+1), rfa (random Fourier), hedgehog, performer (positive random; fragile: a key "
                  "feature exp(w.k - |k|^2/2) underflows to 0 in float32 once |k|^2/(2 sqrt(head_dim)) passes "
                  "about 100, e.g. key entries of RMS 5 at head size 64: such keys drop out, and a layer whose "
                  "keys all do outputs 0; prefer t2r or hedgehog for trained models)"},
    )
    t2r_feature_dim: int = field(
        default=32, metadata={"help": "feature size k of the linear attention (state is k x head_dim per head)"}
    )
    t2r_layers: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated decoder layer indices to convert (0-based), e.g. '0,2,4'; "
                  "default: all. The other layers keep softmax attention (a hybrid model)"},
    )
    # the state update of converted self-attention (modules/states/: the choices are the registered
    # states, each sub-option's values those of the states that read it); cross-attention keeps
    # T2R's additive source summary
    t2r_state: ChoiceEnum(state_names()) = field(
        default="additive",
        metadata={"help": "state update of converted self-attention: additive (T2R, the paper), decay (per-head "
                  "S = g S + phi(k) v^T), gate (data-dependent g per head or feature, GLA), delta, gated-delta; "
                  "see fairseq_t2r/modules/states/ for each"},
    )
    t2r_norm: Optional[ChoiceEnum(NORMS)] = field(
        default=None, metadata={"help": "output normaliser of self-attention: sum (T2R's clamped phi(q).z) or "
                                "rms (per-head RMS norm with a learned weight, as RetNet/SUPRA/fla); default: the "
                                "state's own (rms for the delta rules, which have no sum normaliser; sum otherwise)"}
    )
    t2r_decay_init: ChoiceEnum(option_choices("decay_init")) = field(
        default="near-one", metadata={"help": "--t2r-state decay: per-head decays at the swap, near-one "
                                      "(1 - 2^-12 every head: starts as additive T2R) or retnet (1 - 2^(-5-h))"}
    )
    t2r_decay_fixed: bool = field(
        default=False, metadata={"help": "--t2r-state decay: keep the decays fixed (RetNet, SUPRA) instead of learning them"}
    )
    t2r_gate_source: ChoiceEnum(option_choices("gate_source")) = field(
        default="projection", metadata={"help": "--t2r-state gate: a new projection of x (initialised to a "
                                        "near-one constant gate) or key (Liger: the key projection pooled, no new tensors)"}
    )
    t2r_gate_shape: ChoiceEnum(option_choices("gate_shape")) = field(
        default="head", metadata={"help": "--t2r-state gate: one gate per head (scalar) or per feature (GLA)"}
    )
    t2r_gate_temperature: float = field(
        default=16.0, metadata={"help": "--t2r-state gate: g = sigmoid(logits)^(1/temperature) (GLA's 16)"}
    )
    # the sliding window beside the state (modules/window.py; ops/window's docstring is the spec)
    t2r_window: int = field(
        default=0, metadata={"help": "converted self-attention keeps exact softmax (the teacher's own q/k scores) over "
                             "the last W tokens and feeds the state only the tokens older than W, combined in one "
                             "normalised sum with a learned per-head factor (sum-normalised states, LoLCATs) or by a "
                             "learned per-head mix (--t2r-norm rms, Liger); 0: no window"})
    t2r_window_branch: ChoiceEnum(WINDOW_BRANCHES) = field(
        default="both", metadata={"help": "--t2r-window: which branches run: both; window (the window alone, "
                                  "softmax over the last W tokens: the baseline); linear (the state alone over every "
                                  "token, no window). At eval/generate time: --model-overrides "
                                  "\"{'t2r_window_branch': 'window'}\" scores a windowed model with one branch"})
    # hybrids collapse onto the window when nothing makes the linear branch work (arXiv 2510.05901)
    t2r_window_dropout: float = field(
        default=0.0, metadata={"help": "--t2r-window: the share of training forwards, per layer, in which the window "
                               "is switched off and the state alone runs over every token, so the linear branch "
                               "learns to carry the output (never at evaluation or decoding)"})


@dataclass
class CrossSwapConfig(SwapConfig):
    """Translation models: what becomes of the decoder's cross-attention (--t2r-cross)."""

    # softmax by default: on the demo's EN-DE model (2 x 128, 300 finetuning updates) converting the
    # cross-attention too cost ~5 BLEU more than converting self-attention only (0.9 behind the
    # control); a decoding step stays constant in the target length either way (softmax
    # cross-attention caches the encoder output's keys/values at the first step)
    t2r_cross: ChoiceEnum(CROSS_CHOICES) = field(
        default="softmax", metadata={"help": "translation models' cross-attention: softmax (keep the teacher's; "
                                     "its keys/values are the encoder output, projected at the first step and cached, so a "
                                     "decoding step costs O(source length)) or linear (T2R's source summary: a "
                                     "step costs the same whatever the source length)"}
    )
    t2r_cross_feature_dim: Optional[int] = field(
        default=None, metadata={"help": "--t2r-cross linear: feature size of the linear cross-attention "
                                "(default: --t2r-feature-dim)"}
    )


# ----------------------------------------------------------------------------- the models
@dataclass
class T2RConfig(SwapConfig):
    """The LM's T2R options: the swap, and which parameters finetuning may change."""

    t2r_trainable: ChoiceEnum(TRAINABLE_CHOICES) = field(
        default="all",
        metadata={"help": "parameters fairseq-train may change: all; attention (only the converted attention "
                  "modules: q/k/v/out projections and feature maps, the original code's --attn-only-training); "
                  "feature-map (only the feature maps). The rest is frozen when the model is built"},
    )
    t2r_reconvert: bool = field(
        default=False,
        metadata={"help": "with --finetune-from-model of a T2R checkpoint: the --t2r-* options given may differ "
                  "from the checkpoint's; its feature maps that no longer fit are discarded and initialised "
                  "afresh (without it, a --t2r-* option that contradicts the checkpoint is refused; the options "
                  "not given are the checkpoint's)"},
    )


@dataclass
class T2RCrossConfig(CrossSwapConfig, T2RConfig):
    """The translation model's T2R options (fields in the order: T2RConfig's, then the cross ones)."""


T2R_DEFAULTS = {f.name: f.default for f in fields(T2RCrossConfig) if f.name.startswith("t2r_")}


def legacy_cross(args) -> Optional[str]:
    """--t2r-cross of a checkpoint converted before that option existed: it recorded the boolean
    ``t2r_no_cross`` instead (False, the old default, meant linear cross-attention). None if neither."""
    old = safe_getattr(args, "t2r_no_cross", None)
    return None if old is None else ("softmax" if old else "linear")


def t2r_option(args, name):
    """A T2R option from a Namespace or DictConfig, with its default where it is unset (for
    ``t2r_cross``: an old checkpoint's ``t2r_no_cross`` first, see :func:`legacy_cross`; for
    ``t2r_norm``: the norm the state implies)."""
    value = safe_getattr(args, name, None)
    if value is None and name == "t2r_cross":
        value = legacy_cross(args)
    if value is None and name == "t2r_norm":  # the state's own (its first norm), where the state is known
        state = STATE_UPDATES.get(str(t2r_option(args, "t2r_state")))
        return None if state is None else state.norms[0]
    return T2R_DEFAULTS[name] if value is None else value


def set_t2r_defaults(args):
    """Fill in T2R options missing from an argparse Namespace (e.g. an old checkpoint's args)."""
    if safe_getattr(args, "t2r_cross", None) is None and legacy_cross(args) == "softmax":
        # --t2r-no-cross ignored --t2r-cross-feature-dim; --t2r-cross softmax refuses it
        args.t2r_cross_feature_dim = None
    for name in T2R_DEFAULTS:
        setattr(args, name, t2r_option(args, name))
    return args


def swap_options(args) -> dict:
    """The swap's options (``t2r_*`` fields of :class:`CrossSwapConfig`) of parsed arguments."""
    return {f.name: getattr(args, f.name) for f in fields(CrossSwapConfig) if f.name.startswith("t2r_")}


# ----------------------------------------------------------------------------- t2r-convert
@dataclass
class ConvertConfig(CrossSwapConfig):
    """t2r-convert's options besides its two paths (those are positional: see convert.build_parser)."""

    seed: int = field(default=1, metadata={"help": "seed for the new feature maps' initialisation"})
    force: bool = field(default=False, metadata={"help": "overwrite OUTPUT if it exists (never the input)"})
    # which layers keep softmax, chosen by t2r-convert (layer_select.py); the choice is written as --t2r-layers
    t2r_keep_softmax: Optional[int] = field(
        default=None, metadata={"help": "keep N decoder layers softmax, chosen by --t2r-select, and convert the "
                                "others (written into OUTPUT as --t2r-layers; give one of the two)"})
    t2r_select: Optional[ChoiceEnum(SELECT_RULES)] = field(
        default=None, metadata={"help": "--t2r-keep-softmax: which layers keep softmax: last (default), even "
                                "(evenly spaced), transfer (worst attention-transfer error of converting each "
                                "layer alone) or kl (most KL to the teacher added by converting each layer alone); "
                                "transfer and kl measure after attention transfer (--transfer-data, --transfer-updates)"})
    t2r_select_batches: int = field(
        default=8, metadata={"help": "--t2r-select transfer/kl: train batches of --transfer-data the scores average over"})


def _with_default(default, help_text):
    """A field whose help ends with its default, so the number is written once."""
    return field(default=default, metadata={"help": f"{help_text} (default {default})"})


@dataclass
class TransferConfig(FairseqDataclass):
    """Stage one's options. t2r-convert parses them with ``unset_is_none`` (see :func:`add_options`):
    stage_one.requested() runs the transfer when any of them is given, whatever its value."""

    transfer_data: Optional[str] = field(
        default=None, metadata={"help": "binarized fairseq data (DATA_BIN, as for fairseq-train) "
                                "to fit the feature maps on"})
    transfer_updates: Optional[int] = field(
        default=None, metadata={"help": "number of updates of attention transfer"})
    # Adam's usual rate for a small, freshly initialised module: only the feature maps train
    transfer_lr: float = _with_default(1e-3, "Adam learning rate of the feature maps")
    # fairseq's customary batch size in tokens; -- fairseq-train options (e.g. --update-freq) scale it
    transfer_max_tokens: int = _with_default(4096, "tokens per batch")
    # 0, as the criterion's own default: the transfer loss is the attention outputs' squared error only
    transfer_xent_weight: float = _with_default(
        0.0, "weight of the attention-weight cross-entropy (--t2r-transfer-xent-weight)")
    task: Optional[str] = field(
        default=None, metadata={"help": "fairseq task of the data (default: the checkpoint's task)"})


def add_options(parser, config_class, unset_is_none=False):
    """Add ``config_class``'s fields to ``parser`` (or an argument group) as ``--options``.

    ``unset_is_none``: an option that is not given parses as None, not as its field default,
    so that the caller can tell "given" from "defaulted"; :func:`fill_defaults` sets them after.
    """
    gen_parser_from_dataclass(parser, config_class(), delete_default=unset_is_none)


def fill_defaults(args, config_class):
    """Set each ``config_class`` option that parsed as None to its field default."""
    for f in fields(config_class):
        if f.name != "_name" and getattr(args, f.name, None) is None:
            setattr(args, f.name, f.default)
    return args


def parse_layers(spec, num_layers: int) -> List[int]:
    """The decoder layers --t2r-layers names (all of them when unset), checked against ``num_layers``."""
    if spec is None or str(spec).strip() in ("", "all"):
        return list(range(num_layers))
    try:
        layers = sorted({int(x) for x in str(spec).split(",") if x.strip()})
    except ValueError:
        raise T2RUserError(f"--t2r-layers {spec!r} is not a comma-separated list of layer indices: pass e.g. --t2r-layers 0,2,4") from None
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise T2RUserError(
            f"--t2r-layers names layer {bad[0] if bad else spec!r}, but the decoder has {num_layers} "
            f"layers (0..{num_layers - 1}): pass indices in that range"
        )
    return layers
