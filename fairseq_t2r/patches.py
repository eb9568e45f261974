"""Every change the plugin makes to fairseq (and to torch's loader), in one place.

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
warnings filters and a log     fairseq's known-harmless notices (Hydra      a fairseq release on a current Hydra
filter (``hide_harmless_       1.0-era deprecations, tensorboardX, torch    that logs no optional-package notice
warnings``, on import; off     autocast/jit deprecations) bury a tool's     (none yet)
with FAIRSEQ_T2R_VERBOSE=1)    output under ~25 lines
=============================  ===========================================  =====================================

The last row is installed when this module is imported: by the plugin's own tools before they
import fairseq, and by fairseq's tools through ``--user-dir`` (after fairseq's import, so there
the tensorboardX notice, logged while fairseq itself is imported, still shows).

``apply()`` makes the module-level changes (the first four rows and the eval-lm row); it is idempotent and called
where fairseq is used: on import of ``models`` and ``criterions`` (so by every fairseq tool run
with ``--user-dir``) and by the loaders of the command-line tools -- never on import of the math
(``ops``, ``modules``). Rows five to seven patch one object each and are called by the models.
"""
import functools
import logging
import os
import types
import warnings
import weakref

import numpy as np
import torch

from .checkpoint import is_local, not_a_checkpoint, unreadable_reason
from .errors import RequiresUserDir, T2RUserError

# --------------------------------------------------------------------------- on import: quiet tools
VERBOSE_ENV = "FAIRSEQ_T2R_VERBOSE"
HOW_TO_SEE = f"fairseq's known-harmless warnings are hidden; set {VERBOSE_ENV}=1 to see them"
# (category, message pattern as warnings matches it: from the start, case-insensitive); each one is
# a notice about fairseq's own use of Hydra 1.0 / torch APIs, nothing the user can or should change
HARMLESS_WARNINGS = (
    (UserWarning, r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental"),
    (UserWarning, r"\s*The version_base parameter is not specified"),
    (UserWarning, r"In 'config': Usage of deprecated keyword in package header '# @package _group_'"),
    (UserWarning, r"\s*'config' is validated against ConfigStore schema with the same name"),
    (UserWarning, r"\s*The strict flag in the compose API is deprecated"),
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
    (FutureWarning, r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated"),
    (DeprecationWarning, r"`torch\.jit\.script` is deprecated"),
)
# (logger, message start): fairseq's text_to_speech task logs this on every ``import fairseq``
HARMLESS_LOG_LINES = (("fairseq.tasks.text_to_speech", "Please install tensorboardX"),)


class _DropLines(logging.Filter):
    def __init__(self, start):
        super().__init__()
        self.start = start

    def filter(self, record):
        return not str(record.msg).startswith(self.start)


def hide_harmless_warnings():
    """Hide the notices above unless FAIRSEQ_T2R_VERBOSE is set (idempotent)."""
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    for category, pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)  # no duplicates: it dedupes
    for name, start in HARMLESS_LOG_LINES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(start))


hide_harmless_warnings()


# --------------------------------------------------------------------------- module-level: apply()

def apply():
    """Make the module-level changes of the table above (idempotent)."""
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    for module in (checkpoint_utils, distributed_utils):
        if not isinstance(module.torch, _TorchTrustingCheckpoints):
            module.torch = _TorchTrustingCheckpoints()
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=int)  # np.compat.long was plain int
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([RequiresUserDir])
    if not getattr(checkpoint_utils, "_fairseq_t2r_guarded", False):
        checkpoint_utils.load_checkpoint_to_cpu = _guard_load_to_cpu(checkpoint_utils.load_checkpoint_to_cpu)
        checkpoint_utils.load_model_ensemble_and_task = _guard_load_ensemble(checkpoint_utils.load_model_ensemble_and_task)
        checkpoint_utils.load_checkpoint = _guard_load_for_training(checkpoint_utils.load_checkpoint)
        checkpoint_utils._fairseq_t2r_guarded = True
    _refuse_zero_token_eval()


class _TorchTrustingCheckpoints(types.ModuleType):
    """``torch`` as seen by fairseq's checkpoint code, with ``load`` defaulting to weights_only=False.
    Checkpoints are code-equivalent: load only files you trust."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def _guard_load_to_cpu(load_to_cpu):
    """Every tool: a missing path, or a file torch cannot read at all -> one line."""

    @functools.wraps(load_to_cpu)
    def guarded(path, *args, **kwargs):
        if is_local(path) and not os.path.exists(path):
            raise T2RUserError(f"checkpoint {path} does not exist: check the path")
        try:
            return load_to_cpu(path, *args, **kwargs)
        except Exception:  # only failures are inspected: a good load runs fairseq's code unchanged
            reason = unreadable_reason(path) if is_local(path) and os.path.isfile(path) else None
            if reason is not None:
                raise not_a_checkpoint(path, reason) from None
            raise

    return guarded


def _guard_load_ensemble(load_ensemble):
    """fairseq-eval-lm/-generate/-interactive/-validate, hub: "Model file not found" -> one line."""

    @functools.wraps(load_ensemble)
    def guarded(filenames, *args, **kwargs):
        try:
            return load_ensemble(filenames, *args, **kwargs)
        except OSError as e:
            prefix = "Model file not found: "
            if str(e).startswith(prefix):
                missing = str(e)[len(prefix):]
                raise T2RUserError(
                    f"checkpoint {missing} does not exist: check --path (several checkpoints are "
                    f"separated by '{os.pathsep}')"
                ) from None
            raise

    return guarded


def _is_t2r_trainer(trainer) -> bool:
    model = trainer.get_model() if hasattr(trainer, "get_model") else None
    return model is not None and type(model).__module__.startswith("fairseq_t2r")


def _guard_load_for_training(load_for_training):
    """fairseq-train: a missing --finetune-from-model; a non-default --restore-file that does not
    exist when training a T2R model (fairseq's rules for which file it restores, checked first)."""

    @functools.wraps(load_for_training)
    def guarded(cfg, trainer, *args, **kwargs):
        suffix = getattr(trainer, "checkpoint_suffix", "") or ""
        last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        default_restore = cfg.restore_file == "checkpoint_last.pt"
        finetune = getattr(cfg, "finetune_from_model", None)
        if default_restore and finetune and not os.path.exists(last):
            if is_local(finetune) and not os.path.exists(finetune):
                raise T2RUserError(
                    f"--finetune-from-model {finetune} does not exist: pass the path of the softmax "
                    f"(or T2R) checkpoint to start from"
                )
        if not default_restore and is_local(cfg.restore_file) and _is_t2r_trainer(trainer):
            restore = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
            if not os.path.exists(restore):
                raise T2RUserError(
                    f"--restore-file {restore} does not exist (fairseq would train the T2R model from "
                    f"scratch): check the path, or use --finetune-from-model SOFTMAX.pt"
                )
        return load_for_training(cfg, trainer, *args, **kwargs)

    return guarded


def _refuse_zero_token_eval():
    """Wrap ``eval_lm`` where fairseq-eval-lm's ``main`` will look it up: ``fairseq_cli.eval_lm``
    (the console script) or ``__main__`` (``python -m fairseq_cli.eval_lm``, the demo's runs).
    The plugin is imported by --user-dir inside ``main``, before ``main`` calls ``eval_lm``."""
    import sys

    for module in (sys.modules.get("fairseq_cli.eval_lm"), sys.modules.get("__main__")):
        spec = getattr(module, "__spec__", None)
        if module is None or getattr(spec, "name", None) != "fairseq_cli.eval_lm":
            continue
        if not getattr(module.eval_lm, "_fairseq_t2r_guarded", False):
            module.eval_lm = _guard_eval_lm(module.eval_lm)


def _guard_eval_lm(eval_lm):
    """``eval_lm(models, source_dictionary, batch_iterator, ...)`` that counts the tokens it scores
    (``sample["ntokens"]`` of every non-empty batch) and refuses a result of none."""

    @functools.wraps(eval_lm)
    def guarded(models, source_dictionary, batch_iterator, *args, **kwargs):
        seen = [0]

        def counted(batches):
            for sample in batches:
                if "net_input" in sample:
                    seen[0] += int(sample.get("ntokens") or 0)
                yield sample

        results = eval_lm(models, source_dictionary, counted(batch_iterator), *args, **kwargs)
        if seen[0] == 0:
            positions = min(m.max_positions() for m in models)
            raise T2RUserError(
                f"evaluated 0 tokens: every sample is longer than the model's {positions} positions "
                f"(fairseq skipped them all; --tokens-per-sample defaults to 1024) or the split is empty; "
                f"pass --tokens-per-sample {positions}"
            )
        return results

    guarded._fairseq_t2r_guarded = True
    return guarded


# --------------------------------------------------------------------------- one object each

def skip_future_mask(decoder):
    """An all-T2R decoder builds no (T, T) future mask (linear attention is causal by construction)."""
    decoder.buffered_future_mask = types.MethodType(_no_future_mask, decoder)


def _no_future_mask(decoder, tensor):
    return None


def reorder_encoder_out_once(encoder):
    """``encoder.reorder_encoder_out`` runs for the first call only (see ``_reorder_once``)."""
    encoder.reorder_encoder_out = types.MethodType(_reorder_once, encoder)


def _reorder_once(encoder, encoder_out, new_order):
    """SequenceGenerator re-indexes encoder_out before every decoding step (an O(source length)
    copy), but when every cross-attention is linear the decoder reads encoder_out only at its
    first step, to build the per-sentence source summaries it then reorders itself. So the first
    call (the expansion to beam hypotheses) happens; later calls return encoder_out as it is."""
    if "t2r_expanded" in encoder_out:
        return encoder_out
    out = type(encoder).reorder_encoder_out(encoder, encoder_out, new_order)
    out["t2r_expanded"] = []
    return out


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
