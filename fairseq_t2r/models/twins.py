"""``t2r_X`` architecture twins: same defaults as fairseq's architecture X."""
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_NAME_REGISTRY, register_model_architecture

from ..config import set_t2r_defaults


def _twin(base_arch_fn):
    def arch(args):
        base_arch_fn(args)
        set_t2r_defaults(args)

    return arch


def register_twins(base_model: str, t2r_model: str):
    for arch, model_name in list(ARCH_MODEL_NAME_REGISTRY.items()):
        twin = "t2r_" + arch
        if model_name != base_model or twin in ARCH_MODEL_NAME_REGISTRY:
            continue  # the base model's own name is registered with the model itself
        register_model_architecture(t2r_model, twin)(_twin(ARCH_CONFIG_REGISTRY[arch]))
