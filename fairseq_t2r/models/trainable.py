"""Which parameters of a T2R model fairseq-train may change (``--t2r-trainable``), and the link
from a task to the T2R models it built (how ``t2r_attention_transfer`` finds its model).

Freezing is ``requires_grad=False``, set when the model is built (or, for the attention transfer
criterion, when the criterion is built, which fairseq-train does right after the model). Both
happen before fairseq's Trainer builds its optimizer from the parameters that require grad, so
a frozen parameter is never handed to the optimizer: no weight decay, momentum or fp16 master
copy can move it, and its bits stay those of the checkpoint.
"""
import logging
import weakref
from typing import List

from ..errors import T2RUserError
from ..modules.t2r_attention import T2RAttention

logger = logging.getLogger("fairseq_t2r")

FEATURE_MAP_MARKER = ".feature_map."


def is_feature_map(name: str) -> bool:
    return FEATURE_MAP_MARKER in "." + name


def attention_prefixes(model) -> List[str]:
    return [name + "." for name, m in model.named_modules() if isinstance(m, T2RAttention)]


def keeps_training(name: str, which: str, prefixes) -> bool:
    if which == "feature-map":
        return is_feature_map(name)
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


class _ModelRefs(list):
    """Weak references to models; a copy or pickle of the task gets none (weakrefs cannot be
    pickled, and a copied task did not build those models)."""

    def __reduce__(self):
        return (_ModelRefs, ())

    def __deepcopy__(self, memo):
        return _ModelRefs()


def remember(task, model):
    """Note on ``task`` that it built ``model`` (weakly): fairseq builds the criterion with the same
    task right after the model, so a criterion can prepare the model before the optimizer exists."""
    if task is None:
        return
    refs = _ModelRefs(r for r in getattr(task, "_t2r_models", []) if r() is not None)
    refs.append(weakref.ref(model))
    try:
        task._t2r_models = refs
    except AttributeError:  # a task object that takes no attributes: nothing to remember
        pass


def built_models(task):
    """The T2R models ``task`` built that are still alive, oldest first."""
    return [m for m in (r() for r in getattr(task, "_t2r_models", [])) if m is not None]


def prepare(model, args, task):
    """At the end of a T2R model's build_model: apply --t2r-trainable and remember the model."""
    from ..config import t2r_option

    restrict_training(model, t2r_option(args, "t2r_trainable"), f"--t2r-trainable {t2r_option(args, 't2r_trainable')}")
    remember(task, model)
    return model
