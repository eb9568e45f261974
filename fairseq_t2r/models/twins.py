"""``t2r_X`` architecture twins: same defaults as fairseq's architecture X; and, on fairseq-train's
command line, the ``--finetune-from-model`` checkpoint's options where the command line gives none
(``from_checkpoint.py``)."""
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_NAME_REGISTRY, register_model_architecture

from ..config import set_t2r_defaults
from .from_checkpoint import take_from_checkpoint


def _twin(base_arch_fn):
    def arch(args):
        take_from_checkpoint(args, base_arch_fn)  # before the defaults: it must see what was given
        base_arch_fn(args)
        set_t2r_defaults(args)

    return arch


def _no_defaults(args):
    """The architecture function of a dataclass model's own name (fairseq registers a no-op; the
    dataclass gives the defaults later)."""


def register_twins(base_model: str, t2r_model: str):
    for arch, model_name in list(ARCH_MODEL_NAME_REGISTRY.items()):
        twin = "t2r_" + arch
        if model_name != base_model or twin in ARCH_MODEL_NAME_REGISTRY:
            continue  # the base model's own name is registered with the model itself
        register_model_architecture(t2r_model, twin)(_twin(ARCH_CONFIG_REGISTRY[arch]))
    if getattr(ARCH_CONFIG_REGISTRY.get(t2r_model), "__name__", "") == "noop":
        # a dataclass model (t2r_transformer_lm): its own name's architecture is fairseq's no-op,
        # which must still see the checkpoint (the dataclass defaults come later, so none here)
        ARCH_CONFIG_REGISTRY[t2r_model] = _twin_without_defaults


def _twin_without_defaults(args):
    take_from_checkpoint(args, _no_defaults)
