"""The demo's training numbers: the three size presets and the settings every run shares.

A preset's fields are recorded in ``results.json`` (``settings``); a change to any number here
changes the steps' commands, so a rerun in an old folder is refused rather than mixed.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass
class Preset:
    # --- data: how much of the corpora, and the BPE vocabulary learnt on it
    lm_lines: Optional[int]     # LM sentences kept (None: the whole corpus); sets the data's size and so the run's
    lm_merges: int              # BPE merges of the LM vocabulary: fewer for less text, so every unit is seen often
    mt_pairs: Optional[int]     # EN-DE sentence pairs kept (None: all the LibreOffice help aligns)
    mt_merges: int              # BPE merges of the joint EN-DE vocabulary (shared embeddings), as lm_merges
    # --- model: every model of a preset has this size (teacher, students, scratch), so they compare
    layers: int                 # decoder layers (and encoder layers for translation)
    dim: int                    # embedding and hidden size
    ffn: int                    # feed-forward inner size
    heads: int                  # attention heads: T2R's state is feature_dim x dim/heads per head
    # --- training budgets, in updates
    lm_teacher_updates: int     # the LM's softmax teacher from random init: its whole schedule (the rate decays
                                # linearly to 0 here), long enough to reach its plateau; scratch trains this plus ft_updates
    mt_teacher_updates: int     # the same for the translation teacher
    ft_updates: int             # finetuning after the swap: the same budget for every recipe compared
    transfer_updates: int       # attention transfer, taken out of ft_updates (the transfer recipe's stage one)
    validate_every: int         # updates between validations, checkpoints and log lines (the BLEU curve's step)
    max_tokens: int             # tokens per training batch (fairseq --max-tokens)
    contexts: List[int]         # decoding speed/memory measured at these context lengths
    feature_dim: int = 32       # T2R feature size k (the paper's default, as --t2r-feature-dim)
    tokens_per_sample: int = 128  # LM block length in training and evaluation (perplexities compare at one length)
    compare_quick: bool = False   # t2r-compare with fewer trials and sentences (the where-it-loses section)


PRESETS: Dict[str, Preset] = {
    # --quick: 2000 lines/pairs and a tiny model, ~1.5 min on 2 cores (README): it checks that the
    # pipeline runs end to end (the tests run it on tests/data/), its figures mean little
    "quick": Preset(lm_lines=2000, lm_merges=500, mt_pairs=2000, mt_merges=500, layers=2, dim=64, ffn=128,
                    heads=4, lm_teacher_updates=60, mt_teacher_updates=60, ft_updates=30, transfer_updates=10, validate_every=10,
                    max_tokens=1024, contexts=[32, 256], feature_dim=16, compare_quick=True),
    # the default: each teacher trained on a complete schedule long enough for a sound comparison, inside a
    # cold run of about 30 minutes on 2 cores (docs/results/demo/). The LM on 12000 lines: 8000 updates, where
    # its last quarter still gains 1.3% (10000 updates: 0.14-0.48%, +2 min; 5000: 3.0%) but the budget check
    # holds (the control ends 1.2% above it); EN-DE on 12000 pairs still improved 2.6% at 10000 (27.9 min),
    # so it gets 7000 pairs, on which it levels off by 4000 updates and holds the criterion at 6000 (0.9%).
    # Every arm is finetuned for 300 updates
    "default": Preset(lm_lines=12000, lm_merges=3000, mt_pairs=7000, mt_merges=4000, layers=2, dim=128,
                      ffn=512, heads=4, lm_teacher_updates=8000, mt_teacher_updates=6000, ft_updates=300,
                      transfer_updates=60, validate_every=100, max_tokens=1024, contexts=[128, 2048]),
    # --full: the whole corpora and a 512-wide model; hours on 2 cores
    "full": Preset(lm_lines=None, lm_merges=10000, mt_pairs=None, mt_merges=10000, layers=3, dim=512,
                   ffn=1024, heads=8, lm_teacher_updates=10000, mt_teacher_updates=10000, ft_updates=1000, transfer_updates=200,
                   validate_every=250, max_tokens=4096, contexts=[128, 1024, 4096]),
}

# --- optimisation, the same for every run and preset (fairseq-train flags; the values as they are written there)
ADAM_BETAS = "(0.9,0.98)"  # the Transformer paper's betas, as fairseq's transformer examples use
TEACHER_LR = 1.5e-3        # peak rate from random init (teacher, scratch): small models tolerate a high one
FINETUNE_LR = 5e-4         # after the swap: half the teacher's, the weights are trained already
TEACHER_WARMUP = 400       # warmup of a run from random init (at most a quarter of its updates); its rate then
                           # decays linearly to 0 at its cap: a complete schedule, so a teacher ends at its plateau
                           # rather than wherever a slowly decaying inverse_sqrt rate left it
FINETUNE_WARMUP_SHARE = 5  # warmup of a finetuning run: a fifth of its updates
TRANSFER_LR = 1e-3         # stage one: only the small, fresh feature maps learn, at the teacher's high rate
TRANSFER_WARMUP = 1        # stage one starts at its full rate: the feature maps are fresh, nothing to protect
WEIGHT_DECAY = "0.01"      # light regularisation of small models on little data
CLIP_NORM = "1.0"          # gradient-norm clipping: a guard for the high peak rates above
DROPOUT = "0.1"            # the usual transformer dropout
LABEL_SMOOTHING = "0.1"    # translation: the Transformer paper's label smoothing

# --- data shapes and evaluation
EVAL_MAX_TOKENS = "8192"   # eval_lm batch: evaluation keeps no gradients, so it takes larger batches
NEVER = "1000000"          # fairseq-train's --validate-interval / --save-interval (in epochs): no validation or
                           # checkpoint at an epoch's end, only every validate_every updates (an end of epoch is an
                           # odd point on a curve: a translation arm's 222nd update, ~15 s of validation BLEU)
BEAM = 4                   # translation beam, for the test BLEU and the validation BLEU curve
GEN_BATCH_SIZE = "64"      # sentences per generate batch


def warmup(updates: int, share: int) -> int:
    """Warmup updates: ``1/share`` of a run's updates, at least one."""
    return max(1, updates // share)
