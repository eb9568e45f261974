"""Which parameters of a T2R model fairseq-train may change (``--t2r-trainable``); at the end of
a build, the model is linked to the task that built it (``patches.remember``: how
``t2r_attention_transfer`` finds its model).

Freezing is ``requires_grad=False``, set when the model is built (or, for the attention transfer
criterion, when the criterion is built, which fairseq-train does right after the model). Both
happen before fairseq's Trainer builds its optimizer from the parameters that require grad, so
a frozen parameter is never handed to the optimizer: no weight decay, momentum or fp16 master
copy can move it, and its bits stay those of the checkpoint.
"""
import logging
from typing import List

from .. import patches
from ..checkpoint import is_new_tensor
from ..errors import T2RUserError
from ..modules.t2r_attention import T2RAttention

logger = logging.getLogger("fairseq_t2r")


def attention_prefixes(model) -> List[str]:
    return [name + "." for name, m in model.named_modules() if isinstance(m, T2RAttention)]


def keeps_training(name: str, which: str, prefixes) -> bool:
    if which == "feature-map":
        return is_new_tensor(name)
    if which == "attention":
        return any(name.startswith(p) for p in prefixes)
    return True


def restrict_training(model, which: str, why: str):
    """Freeze every parameter outside ``which`` ("all", "attention" or "feature-map"); log one line.

    Only ever removes parameters from training (a parameter frozen for another reason stays
    frozen). Returns (trainable, total) parameter counts.
    """
    which = str(which)
    prefixes = attention_prefixes(model)
    for name, p in model.named_parameters():
        if not keeps_training(name, which, prefixes):
            p.requires_grad_(False)
    params = list(model.parameters())  # shared tensors once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if trainable == 0:
        maps = sorted({type(m.feature_map).__name__ for m in model.modules() if isinstance(m, T2RAttention)})
        raise T2RUserError(
            f"{why} leaves no parameter to train: the feature map ({', '.join(maps) or 'none'}) has no "
            f"parameters; use a learned map (--t2r-feature-map t2r or hedgehog) or --t2r-trainable all/attention"
        )
    if which != "all":
        logger.info(f"T2R {why}: training {trainable:,} of {total:,} parameters ({100.0 * trainable / total:.2f}%), the rest frozen")
    return trainable, total


def prepare(model, args, task):
    """At the end of a T2R model's build_model: apply --t2r-trainable and remember the model."""
    from ..config import t2r_option

    restrict_training(model, t2r_option(args, "t2r_trainable"), f"--t2r-trainable {t2r_option(args, 't2r_trainable')}")
    patches.remember(task, model)
    return model
