"""The models ``t2r-compare`` scores: loading, their limits, the test text, and scoring.

Every probe sees the models through two things: ``Loaded`` (a model with its name, its position
kind and how far it can run) and ``score`` (log-probabilities of a batch of blocks). The teacher is
always first and is named "teacher"; converted models are named by their folder or file.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .. import checkpoint
from ..errors import T2RUserError
from ..models import positions as positions_mod


@dataclass
class Loaded:
    name: str
    path: str
    model: object
    kind: str               # "lm" or "mt"
    positions: str          # "learned", "sinusoidal" or "none" (the decoder's)
    limit: Optional[int]    # the longest input it can run (None: any); learned positions only
    converted: bool         # True for a T2R model

    def runs(self, length: int) -> bool:
        return self.limit is None or length <= self.limit


def task_kind(path: str) -> str:
    """"lm" or "mt" from a checkpoint's architecture (one line for what is neither)."""
    from .. import models  # noqa: F401  registers the t2r_ architectures family_of looks up

    _, arch = checkpoint.model_config(checkpoint.load(path))
    family = checkpoint.family_of(arch)
    if family:
        return family
    raise T2RUserError(f"{path}: architecture {arch} is neither a transformer language model nor a translation "
                       "transformer: t2r-compare compares fairseq transformer_lm / transformer checkpoints and their T2R twins")


def trained_length(path: str, kind: str) -> int:
    """The block length a language model was trained on (its task's ``tokens_per_sample``); for a
    translation model, its decoder's positions (only a label: sentences set their own lengths)."""
    state = checkpoint.load(path)
    if kind == "lm":
        n = getattr(checkpoint.task_config(state), "tokens_per_sample", None)
        if n:
            return int(n)
    args, _ = checkpoint.model_config(state)
    return int(getattr(args, "max_target_positions", None) or 1024)


def load(name: str, path: str, data: str, kind: str) -> Loaded:
    """Loads ``path`` on the CPU in eval mode with its task's dictionary from ``data``; a model whose
    positions extend is allowed any length (models/positions.py), the teacher included."""
    import torch
    from fairseq import checkpoint_utils

    from .. import criterions, models, patches  # noqa: F401  registers the T2R models, loads checkpoints

    patches.apply()
    torch.set_grad_enabled(False)
    overrides = {"data": data}
    ms, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    model = ms[0].eval()
    decoder = model.decoder
    pos = positions_mod.kind(decoder)
    from ..modules.t2r_attention import T2RAttention

    converted = any(isinstance(m, T2RAttention) for m in model.modules())
    if pos != "learned":
        positions_mod.extend(decoder)
    limit = positions_mod.learned_limit(decoder) if pos == "learned" else None
    return Loaded(name, path, model, kind, pos, limit, converted)


def dictionary(loaded: Loaded):
    return loaded.model.decoder.dictionary


def same_dictionaries(models: List[Loaded]):
    first = dictionary(models[0])
    for m in models[1:]:
        if dictionary(m) != first:
            raise T2RUserError(f"{m.path} and {models[0].path} have different dictionaries: compare a converted "
                               "model only with the teacher it was converted from")


def token_stream(data: str, subset: str, dict_) -> np.ndarray:
    """Every token of a binarized LM split as one int64 array (each line ends with its eos)."""
    return np.concatenate([s.numpy() for s in sentences(str(Path(data) / subset), dict_)]).astype(np.int64)


def sentences(prefix: str, dict_) -> list:
    """The binarized lines of ``prefix`` (``DATA/test``, ``DATA/test.en-de.en``) as tensors."""
    from fairseq.data import data_utils

    ds = data_utils.load_indexed_dataset(prefix, dict_)
    if ds is None:
        raise T2RUserError(f"{prefix}.bin/.idx not found: --data must be the fairseq-preprocess folder the models "
                           "were trained on (with the split you ask for)")
    return [ds[i] for i in range(len(ds))]


def score(model, blocks) -> tuple:
    """(log-prob of each target (B, T), log-probs (B, T, V)) of an LM reading ``blocks`` (B, T+1):
    inputs blocks[:, :-1], targets blocks[:, 1:]."""
    out = model(blocks[:, :-1])
    lprobs = model.get_normalized_probs(out, log_probs=True).float()
    return lprobs.gather(-1, blocks[:, 1:].unsqueeze(-1)).squeeze(-1), lprobs


def scorer(models: List[Loaded]):
    """``blocks -> {name: score(...)}`` over the models that can run that length."""
    def run(blocks) -> Dict[str, tuple]:
        return {m.name: score(m.model, blocks) for m in models if m.runs(blocks.shape[1] - 1)}
    return run


def nll_of_targets(model, blocks, first: int) -> "np.ndarray":
    """(B,) mean negative log-likelihood of targets blocks[:, first:] given what precedes them."""
    lp, _ = score(model, blocks)
    return (-lp[:, first - 1:]).double().mean(-1).numpy()
