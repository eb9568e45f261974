"""The finetuning arms the demo and the quality benchmark compare, declared once.

Every arm starts from the same softmax teacher (``scratch`` excepted) and gets the same
finetuning budget and schedule, so that the only difference is what the arm changes:
- ``control``: the softmax teacher itself, trained on for the finetuning budget. It separates
  the cost of converting from the value of the extra updates every converted arm also gets;
- a feature map (``t2r``, ``elu``, ``rfa``), a state update (``decay`` ... ``gated-delta``), a
  hybrid or (translation) linear cross-attention: the teacher swapped that way, then finetuned;
- ``transfer``: attention transfer first (only the feature maps learn), then finetuning, inside
  the same budget; ``distill``: finetuning with the teacher's distillation loss added;
- ``hybrid-RULE``: one decoder layer kept softmax, chosen by ``t2r-convert --t2r-keep-softmax 1
  --t2r-select RULE`` (layer_select.py), with attention transfer (the measured rules score each layer
  after it), then finetuning, inside the same budget: the four rules differ in the choice only;
- ``window``: the best state update (the gate from the key) with exact softmax over the last
  ``WINDOW`` tokens beside it (``--t2r-window``); ``window-only``: that window alone, no linear
  branch (``--t2r-window-branch window``), the baseline that says whether the linear branch matters;
  ``window-dropout``: ``window`` with the window switched off in half of the training forwards
  (``--t2r-window-dropout``), against the collapse onto the window (0.5 is a first choice, not tuned);
- ``scratch``: T2R from random init for the teacher's budget plus the finetuning budget.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

from ..errors import T2RUserError
from ..modules.states import STATE_UPDATES, state_names

WINDOW = 64  # the window arms' --t2r-window (see their entries)


@dataclass(frozen=True)
class Variant:
    name: str
    label: str                      # the report's wording
    feature_map: str = "t2r"        # "" for the softmax control
    flags: Tuple[str, ...] = ()     # more t2r-model flags (state update, converted layers, cross-attention)
    recipe: str = "finetune"        # finetune | transfer | select | distill | scratch
    kinds: Tuple[str, ...] = ("lm", "mt")
    hybrid: bool = False            # keep the last decoder layer softmax (--t2r-layers: all the others)
    select: str = ""                # recipe select: the --t2r-select rule choosing the one softmax layer


_ALL = [
    Variant("control", "softmax, same budget (control)", feature_map=""),
    Variant("t2r", "T2R, swap + finetune"),
    Variant("elu", "ELU, swap + finetune", feature_map="elu"),
    Variant("rfa", "RFA, swap + finetune", feature_map="rfa"),
    Variant("transfer", "T2R, attention transfer + finetune", recipe="transfer"),
    Variant("distill", "T2R, swap + finetune with distillation", recipe="distill"),
    Variant("hybrid", "T2R hybrid (last layer softmax), swap + finetune", hybrid=True),
    *[Variant(f"hybrid-{rule}", f"T2R hybrid (1 layer softmax, --t2r-select {rule}), transfer + finetune",
              recipe="select", select=rule) for rule in ("last", "even", "transfer", "kl")],
    # translation: every arm above converts the decoder's self-attention only (--t2r-cross softmax,
    # the default); these convert its cross-attention too
    Variant("cross-linear", "T2R with linear cross-attention too, swap + finetune", flags=("--t2r-cross", "linear"),
            kinds=("mt",)),
    Variant("cross-64", "T2R with 64 cross-attention features, swap + finetune",
            flags=("--t2r-cross", "linear", "--t2r-cross-feature-dim", "64"), kinds=("mt",)),
    Variant("cross-128", "T2R with 128 cross-attention features, swap + finetune",
            flags=("--t2r-cross", "linear", "--t2r-cross-feature-dim", "128"), kinds=("mt",)),
    # the state updates that declare an arm (modules/states/: each class's ``arm``), in their order
    *(Variant(name, STATE_UPDATES[name].arm[0], flags=("--t2r-state", name) + STATE_UPDATES[name].arm[1])
      for name in state_names() if STATE_UPDATES[name].arm is not None),
    # --t2r-window: the field's 64 (LoLCATs, Liger); the demo's LM blocks are 128 tokens and the
    # benchmark's 512, so the linear branch carries 1/2 and 7/8 of the positions' older context
    # (most translation targets are shorter than 64: there the window is the teacher's softmax)
    Variant("window", f"T2R + gate from the key + {WINDOW}-token softmax window, swap + finetune",
            flags=("--t2r-state", "gate", "--t2r-gate-source", "key", "--t2r-window", str(WINDOW))),
    # the window's size swept for translation, whose outputs are mostly shorter than 64 positions
    *[Variant(f"window-{w}", f"T2R + gate from the key + {w}-token softmax window, swap + finetune",
              flags=("--t2r-state", "gate", "--t2r-gate-source", "key", "--t2r-window", str(w))) for w in (16, 32)],
    Variant("window-only", f"{WINDOW}-token softmax window alone (no linear branch), swap + finetune",
            flags=("--t2r-window", str(WINDOW), "--t2r-window-branch", "window")),
    Variant("window-dropout", "window arm with the window off in half the training forwards, swap + finetune",
            flags=("--t2r-state", "gate", "--t2r-gate-source", "key", "--t2r-window", str(WINDOW),
                   "--t2r-window-dropout", "0.5")),
    Variant("scratch", "T2R from random init", recipe="scratch"),
]
VARIANTS: Dict[str, Variant] = {v.name: v for v in _ALL}
# the demo's default arms: the control, the paper's T2R beside the fixed feature map it is measured against
# (ELU), the best state update of the quality benchmark (the gate from the key: docs/results/quality.md), and
# the best arm at the demo's size, the gate with a softmax window (0.998x the control's perplexity, -0.2 BLEU:
# docs/results/arms_demo_size/) with the window alone beside it, which says whether its linear branch matters.
# Left to --variants and the quality benchmark, where a default run's 30 minutes had no room for them: RFA
# (the worst arm of both tasks in the demo of 2026-12-06) and attention transfer (no better than the plain
# swap at this size: 98.4 against 98.2 perplexity, 17.4 against 17.6 BLEU); scratch, T2R from random init,
# which costs the teacher's whole budget again
DEMO_DEFAULT = "control,t2r,elu,gate,window,window-only"


def parse(spec: str, kind: str) -> List[Variant]:
    """The arms ``--variants`` names that apply to task ``kind`` ("lm" or "mt"), in table order."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise T2RUserError(f"--variants {spec!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
                           f"choose from {', '.join(VARIANTS)}")
    return [v for v in _ALL if v.name in names and kind in v.kinds]


def run_name(variant: str, seed: int, first_seed: int) -> str:
    """A run's name: the arm's name for the first seed, ``NAME-sSEED`` for the others."""
    return variant if seed == first_seed else f"{variant}-s{seed}"


def split_run_name(name: str) -> Tuple[str, str]:
    """(arm, seed suffix) of a run name: "t2r-s2" -> ("t2r", "s2"); "t2r" -> ("t2r", "")."""
    base, _, suffix = name.rpartition("-s")
    if base in VARIANTS and suffix.isdigit():
        return base, "s" + suffix
    return name, ""
