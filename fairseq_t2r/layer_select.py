"""Which decoder layers keep softmax: ``t2r-convert IN OUT --t2r-keep-softmax N --t2r-select RULE``
(``convert.convert_selecting`` runs the command; this module chooses and measures).

The choice is written into OUT exactly as ``--t2r-layers`` writes it (the converted layers), so
fairseq-train, -generate and -eval-lm read it back without any new flag; OUT also records
``t2r_select`` (rule, N, the per-layer scores) and t2r-convert says it in one log line.

Rules (L decoder layers, N of them kept softmax):
- ``last``: the last N layers;
- ``even``: N layers evenly spaced, layer ``floor((j + 1/2) L / N)`` for j < N (centred: with N = 1
  of 4 it keeps layer 2, so that it is not ``last`` again);
- ``transfer``: the N layers whose own attention the linear form reproduces worst: each layer's
  attention-transfer error (the per-element squared error between its linear and softmax outputs
  before ``out_proj``, as ``--criterion t2r_attention_transfer`` logs it) with every layer fed the
  softmax model's hidden states -- which is what converting that layer alone means;
- ``kl``: the N layers whose conversion alone adds the most KL(teacher || model) per target token:
  for each layer i, the model with layer i linear and every other layer softmax (fairseq-t2r's
  teacher forcing passes the softmax output on in the others) against the all-softmax model.

The measured rules score the layers *after stage one* (``--transfer-data DATA --transfer-updates
K``), not at the swap: at the swap the feature maps are random, and a random map's error ranks
layers by how far their attention is from what a random map happens to produce (it changes with
``--seed``), not by what the layer will cost once its map is fitted. Stage one fits every
layer's map independently of the others (teacher forcing), so one stage-one run over all layers
gives each layer's fitted map at once; the scores then take ``--t2r-select-batches`` batches of
DATA's train split (the data stage one fitted on; the valid and test splits stay unseen), and the
kept layers' maps are dropped from OUT. Ties go to the later layer (as ``last`` would).
"""
import math
from contextlib import contextmanager
from typing import Dict, List, Sequence

import torch

from .config import SELECT_RULES
from .errors import T2RUserError
from .modules.transfer import Recordable, module_label, recording

RULES = SELECT_RULES
MEASURED = ("transfer", "kl")


# ----------------------------------------------------------------------------- the choice
def check_request(keep, rule, layers_spec, num_layers: int, transfer_requested: bool) -> None:
    """Refuse a request that cannot be met, before anything is trained or written."""
    if keep is None:
        if rule is not None:
            raise T2RUserError(f"--t2r-select {rule} chooses the layers --t2r-keep-softmax N keeps: give N too")
        return
    if layers_spec is not None:
        raise T2RUserError("--t2r-keep-softmax chooses the converted layers itself: leave --t2r-layers out "
                           "(or drop --t2r-keep-softmax to name the layers yourself)")
    if not 1 <= keep < num_layers:
        raise T2RUserError(f"--t2r-keep-softmax {keep}: the decoder has {num_layers} layers, so keep between 1 "
                           f"and {num_layers - 1} of them softmax (0 is plain t2r-convert, {num_layers} converts nothing)")
    if rule in MEASURED and not transfer_requested:
        raise T2RUserError(f"--t2r-select {rule} scores each layer after attention transfer: give --transfer-data "
                           f"DATA_BIN --transfer-updates N (or choose by position: --t2r-select last or even)")


def by_position(rule: str, keep: int, num_layers: int) -> List[int]:
    """The layers ``last`` or ``even`` keeps softmax, ascending."""
    if rule == "last":
        return list(range(num_layers - keep, num_layers))
    if rule == "even":
        return sorted({math.floor((j + 0.5) * num_layers / keep) for j in range(keep)})
    raise ValueError(f"{rule!r} is not a positional rule (last, even)")


def by_score(scores: Dict[int, float], keep: int) -> List[int]:
    """The ``keep`` layers of highest score (ties: the later layer), ascending."""
    ranked = sorted(scores, key=lambda i: (-scores[i], -i))
    return sorted(ranked[:keep])


def converted(kept: Sequence[int], num_layers: int) -> List[int]:
    return [i for i in range(num_layers) if i not in kept]


def log_line(rule: str, kept: Sequence[int], num_layers: int, scores=None, where: str = "") -> str:
    conv = converted(kept, num_layers)
    line = (f"--t2r-select {rule}: softmax kept in decoder layer(s) {','.join(map(str, kept))}, converted "
            f"{','.join(map(str, conv))} (--t2r-layers {','.join(map(str, conv))})")
    if scores is None:
        return line + "; chosen by position, nothing measured"
    what = "attention-transfer error per element" if rule == "transfer" else "KL(teacher || model) nats/token"
    shown = " ".join(f"l{i} {scores[i]:.4g}" for i in sorted(scores))
    return f"{line}; {what} of converting each layer alone, {where}: {shown} (the highest kept)"


# ----------------------------------------------------------------------------- the scores
def _layer_of(label: str) -> int:
    """'l3' or 'l3_cross' (modules.transfer.module_label) -> 3."""
    return int(label[1:].split("_")[0])


@contextmanager
def converting_only(model, layer):
    """A forward of ``model`` (a T2R model) in which only decoder layer ``layer``'s T2R modules run
    linear and every other one passes on its softmax output (``layer`` None: the softmax model).
    Yields the records (modules.transfer.recording) of the teacher-forced modules."""
    with recording(model) as records:
        for m in model.modules():
            if getattr(m, "transfer", None) is not None and layer is not None:
                label = next(lbl for lbl, r in records.items() if r is m.transfer)
                if _layer_of(label) == layer:
                    m.transfer = None
        yield {lbl: r for lbl, r in records.items() if layer is None or _layer_of(lbl) != layer}


def layer_scores(model, batches, rule: str, pad: int) -> Dict[int, float]:
    """{decoder layer: score} of every converted layer of ``model`` over ``batches`` (fairseq samples);
    float64 sums, eval mode, no autograd."""
    model.eval()
    layers = sorted({_layer_of(lbl) for lbl in _labels(model)})
    sums = {i: 0.0 for i in layers}
    count = 0
    with torch.no_grad():
        for sample in batches:
            if rule == "transfer":
                net_input = sample["net_input"]  # translation: prev_output_tokens; LM: src_tokens
                keep = net_input.get("prev_output_tokens", net_input["src_tokens"]).ne(pad)
                with converting_only(model, None) as records:
                    model(**sample["net_input"], features_only=True)
                for lbl, rec in records.items():
                    err = (rec.linear.double() - rec.softmax.double()).pow(2).mean(dim=(1, 3))  # (B, T)
                    sums[_layer_of(lbl)] += err.masked_select(keep).sum().item()
                count += int(keep.sum())
            elif rule == "kl":
                mask = sample["target"].ne(pad)
                teacher = _lprobs(model, sample, None)[mask]
                p = teacher.exp()
                for i in layers:
                    student = _lprobs(model, sample, i)[mask]
                    sums[i] += torch.where(p > 0, p * (teacher - student), torch.zeros_like(p)).sum().item()
                count += int(mask.sum())
            else:
                raise ValueError(f"{rule!r} is not a measured rule {MEASURED}")
    if count == 0:
        raise T2RUserError("--t2r-select: the batches hold no target token: give --transfer-data with text in its train split")
    return {i: s / count for i, s in sums.items()}


def _labels(model):
    return [module_label(n) for n, m in model.named_modules() if isinstance(m, Recordable)]


def _lprobs(model, sample, layer):
    with converting_only(model, layer):
        out = model(**sample["net_input"])
    return model.get_normalized_probs(out, log_probs=True).double()


def first_batches(task, model, batches: int, max_tokens: int) -> list:
    """The first ``batches`` batches of ``task``'s train split, in the order fairseq's iterator gives
    them unshuffled (the split stage one fitted on; valid and test stay unseen)."""
    from fairseq import utils

    task.load_dataset("train")
    itr = task.get_batch_iterator(
        dataset=task.dataset("train"), max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
    ).next_epoch_itr(shuffle=False)
    return [sample for _, sample in zip(range(batches), itr)]
