"""Every change the plugin makes to fairseq (and to torch's loader), in one place: this table, and
the package's four files (``loaders.py``, ``objects.py``, ``tasks.py``, ``quiet.py``) that hold the code of its rows.

=============================  ===========================================  =====================================
what it changes                why                                          unnecessary with
=============================  ===========================================  =====================================
``torch.load`` as seen by      torch >= 2.6 loads with weights_only=True,   a fairseq release that passes
fairseq's checkpoint_utils     which rejects fairseq checkpoints            weights_only=False itself (fairseq
and distributed.utils:         ("Unsupported global: argparse.Namespace",   main does, in checkpoint_utils;
weights_only=False default     numpy scalars in released checkpoints)       0.12.3 / ve-fairseq does not)
``np.compat.long`` = int       numpy 2 removed np.compat; TokenBlock-       a fairseq release without
                               Dataset(break_mode="eos") and Language-      np.compat (none yet: 0.12.3 and
                               PairDataset's bucketing still use it         main still use it)
torch safe global              a weights-only torch.load in a process       never (ours): our marker class
``RequiresUserDir``            that loaded the plugin accepts T2R           (errors.RequiresUserDir)
                               checkpoints
checkpoint_utils loaders       a missing or unreadable checkpoint, a        none: fairseq (0.12.3 and main)
(``load_checkpoint_to_cpu``,   missing --finetune-from-model: one line      answers with tracebacks, and trains
``load_model_ensemble_and_     instead of a traceback; a missing non-       from scratch when --restore-file
task``, ``load_checkpoint``)   default --restore-file of a T2R run stops    does not exist
                               instead of training from scratch
decoder.buffered_future_mask   causality is built into linear attention:    none: fairseq builds the mask for
-> None (all-T2R decoders,     fairseq's (T, T) float mask (64 MB at 4096   every decoder; no hook says the
``skip_future_mask``)          tokens, cached) would be built for nothing   attention needs none
encoder.reorder_encoder_out    with linear cross-attention the decoder      none: SequenceGenerator reorders
done once (all-linear cross-   reads encoder_out at its first step only;    encoder_out at every step
attention, ``reorder_encoder_  later O(source) re-indexing is wasted
out_once``)
``task._t2r_models`` (weak     t2r_attention_transfer must freeze its       none: fairseq gives a criterion the
refs, ``remember`` /           model before the optimizer exists; fairseq   task, never the model, before the
``built_models``)              builds the criterion with the same task      optimizer is built
                               right after the model
fairseq_cli.eval_lm's         fairseq skips every sample longer than the   none: fairseq (0.12.3 and main)
``eval_lm``: 0 tokens          model's positions with one WARNING; with     reports "Evaluated 0 tokens ...
evaluated -> one line, exit 1  all skipped (default --tokens-per-sample     Perplexity: 1.00" and exits 0
                               1024, a 128-position model) it reports
                               perplexity 1.00, which reads as a result
``TranslationFromPretrained-   the mBART task's load_dataset and build_     a fairseq release whose mBART task
BARTTask.args`` = its cfg      generator read self.args, which Translation-  reads self.cfg (none yet: 0.12.3
(``tasks.py``)                 Task no longer sets: fairseq-train and       and main read self.args)
                               -generate stop with AttributeError
setup_task of translation_     a missing --langs (AttributeError on None)   none: fairseq answers with
from_pretrained_bart and       or --lang-pairs (ValueError) stops with a    tracebacks (0.12.3 and main)
translation_multi_simple_      traceback; one line naming the option
epoch (``tasks.py``)           and its form instead
SinusoidalPositional-          past its table (a T2R decoder runs past      a fairseq release whose table
Embedding of T2R decoders      its trained length, models/positions.py)     grows geometrically (none yet:
grows its table by doubling    fairseq rebuilds the whole table one row     0.12.3 and main rebuild it at
(``sinusoidal_table_``         longer at every step: O(T) work per          every step)
``doubles``)                   generated token
warnings filters and a log     fairseq's known-harmless notices (Hydra      a fairseq release on a current Hydra
filter (``hide_harmless_       1.0-era deprecations, tensorboardX, torch    that logs no optional-package notice
warnings``, on import; off     autocast/jit deprecations) bury a tool's     (none yet)
with FAIRSEQ_T2R_VERBOSE=1)    output under ~25 lines
=============================  ===========================================  =====================================

The last row is installed when this module is imported: by the plugin's own tools before they
import fairseq, and by fairseq's tools through ``--user-dir`` (after fairseq's import, so there
the tensorboardX notice, logged while fairseq itself is imported, still shows).

``apply()`` makes the module-level changes (the first four rows, the eval-lm row and the two task rows); it is
idempotent and called
where fairseq is used: on import of ``models`` and ``criterions`` (so by every fairseq tool run
with ``--user-dir``) and by the loaders of the command-line tools -- never on import of the math
(``ops``, ``modules``). Rows five to seven and the sinusoidal-table row patch one object each and are called by the models.
"""
import types

import numpy as np
import torch

from ..errors import RequiresUserDir
from .loaders import (
    TorchTrustingCheckpoints,
    guard_load_ensemble,
    guard_load_for_training,
    guard_load_to_cpu,
    refuse_zero_token_eval,
)
from .objects import built_models, remember, reorder_encoder_out_once, skip_future_mask  # noqa: F401
from .quiet import HOW_TO_SEE, VERBOSE_ENV, hide_harmless_warnings  # noqa: F401
from .tasks import patch_release_tasks

hide_harmless_warnings()  # on import: the plugin's own tools import this before fairseq


def apply():
    """Make the module-level changes of the table above (idempotent)."""
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    for module in (checkpoint_utils, distributed_utils):
        if not isinstance(module.torch, TorchTrustingCheckpoints):
            module.torch = TorchTrustingCheckpoints()
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=int)  # np.compat.long was plain int
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([RequiresUserDir])
    if not getattr(checkpoint_utils, "_fairseq_t2r_guarded", False):
        checkpoint_utils.load_checkpoint_to_cpu = guard_load_to_cpu(checkpoint_utils.load_checkpoint_to_cpu)
        checkpoint_utils.load_model_ensemble_and_task = guard_load_ensemble(checkpoint_utils.load_model_ensemble_and_task)
        checkpoint_utils.load_checkpoint = guard_load_for_training(checkpoint_utils.load_checkpoint)
        checkpoint_utils._fairseq_t2r_guarded = True
    refuse_zero_token_eval()
    patch_release_tasks()
