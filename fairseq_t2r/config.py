"""Every T2R command-line option, in one place.

The model configs (LM and translation) inherit these dataclasses, so the options appear in
``fairseq-train --help`` under the model's group and are saved in every checkpoint's cfg.
"""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import safe_getattr

from .modules.feature_maps import FEATURE_MAPS

TRAINABLE_CHOICES = ["all", "attention", "feature-map"]


@dataclass
class T2RConfig(FairseqDataclass):
    t2r_feature_map: ChoiceEnum(sorted(FEATURE_MAPS)) = field(
        default="t2r",
        metadata={"help": "feature map of the linear attention: t2r (learned MLP + ReLU, the paper), "
                  "elu (elu+1), rfa (random Fourier), performer (positive random), hedgehog"},
    )
    t2r_feature_dim: int = field(
        default=32, metadata={"help": "feature size k of the linear attention (state is k x head_dim per head)"}
    )
    t2r_layers: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated decoder layer indices to convert (0-based), e.g. '0,2,4'; "
                  "default: all. The other layers keep softmax attention (a hybrid model)"},
    )
    t2r_trainable: ChoiceEnum(TRAINABLE_CHOICES) = field(
        default="all",
        metadata={"help": "parameters fairseq-train may change: all; attention (only the converted attention "
                  "modules: q/k/v/out projections and feature maps, the original code's --attn-only-training); "
                  "feature-map (only the feature maps). The rest is frozen when the model is built"},
    )


@dataclass
class T2RCrossConfig(T2RConfig):
    t2r_cross_feature_dim: Optional[int] = field(
        default=None, metadata={"help": "feature size of the linear cross-attention (default: --t2r-feature-dim)"}
    )
    t2r_no_cross: bool = field(
        default=False, metadata={"help": "keep softmax cross-attention; convert decoder self-attention only"}
    )


T2R_DEFAULTS = {name: f.default for name, f in T2RCrossConfig.__dataclass_fields__.items() if name.startswith("t2r_")}


def t2r_option(args, name):
    """A T2R option from a Namespace or DictConfig, with its default where it is unset."""
    value = safe_getattr(args, name, None)
    return T2R_DEFAULTS[name] if value is None else value


def set_t2r_defaults(args):
    """Fill in T2R options missing from an argparse Namespace (e.g. an old checkpoint's args)."""
    for name in T2R_DEFAULTS:
        setattr(args, name, t2r_option(args, name))
    return args
