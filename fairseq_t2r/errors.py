"""User-facing errors: one line on stderr, exit status 1, no traceback.

T2RUserError subclasses SystemExit on purpose: fairseq wraps checkpoint loading in
``except Exception`` and re-raises a generic message with a traceback; a SystemExit passes
through that unchanged, so the user sees only our line. In-process callers can still catch it.

``guard_checkpoint_loading`` (installed when the plugin is imported) turns the checkpoint
mistakes fairseq reports with a traceback -- a path that does not exist, a file that is not a
checkpoint -- into such one-line errors, in every fairseq tool run with ``--user-dir``.
``RequiresUserDir`` is the marker every T2R checkpoint carries so that a fairseq run *without*
``--user-dir`` names this plugin instead of failing with ``KeyError: '_name'``.
"""
import functools
import os


class T2RUserError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"fairseq_t2r: error: {message}")
        self.message = message

    def __str__(self):
        return self.message


class RequiresUserDir:
    """Marker stored in every T2R checkpoint (model state dict metadata, key ``fairseq_t2r``).

    It is pickled by reference, as ``fairseq_t2r.errors.RequiresUserDir``, so loading a T2R
    checkpoint in a process that has not loaded the plugin ends up here:
    - fairseq's default ``torch.load`` (weights_only=True, torch >= 2.6) stops with
      "Unsupported global: GLOBAL fairseq_t2r.errors.RequiresUserDir" (instead of fairseq's
      ``KeyError: '_name'`` much later): the fix is ``--user-dir /path/to/fairseq_t2r``;
    - a full unpickle (weights_only=False, older torch or newer fairseq) imports
      ``fairseq_t2r``, which registers the T2R models, so the checkpoint then simply loads
      wherever the plugin is installed; where it is not, Python says
      "No module named 'fairseq_t2r'".
    Do not rename or move it: existing checkpoints refer to it by this name.
    """


CHECKPOINT_MARKER_KEY = "fairseq_t2r"


def mark_state_dict(module, state_dict, prefix, local_metadata):
    """state_dict post-hook of the T2R models: put the marker into the saved metadata."""
    local_metadata[CHECKPOINT_MARKER_KEY] = RequiresUserDir


def _is_local(path) -> bool:
    return isinstance(path, str) and "://" not in path


def _unreadable_reason(path):
    """None if ``path`` loads with torch.load, else a short reason (only called after a failure)."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, random bytes, a text file...
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
        return f"{type(e).__name__}: {first[:100]}" if first else type(e).__name__
    return None


def _not_a_checkpoint(path, reason):
    if os.path.basename(path).startswith("checkpoint_last"):
        # fairseq copies checkpoint_last.pt non-atomically: a run killed during that copy leaves it cut
        fix = ("it was probably cut short when its run was killed: delete it (or copy the newest intact "
               "checkpoint_*.pt over it) and rerun to resume from there")
    else:
        fix = "it may be truncated or not a checkpoint at all: pass a .pt file written by fairseq-train or t2r-convert"
    return T2RUserError(f"{path} is not a readable fairseq checkpoint ({reason}); {fix}")


def _is_t2r_trainer(trainer) -> bool:
    model = trainer.get_model() if hasattr(trainer, "get_model") else None
    return model is not None and type(model).__module__.startswith("fairseq_t2r")


def guard_checkpoint_loading():
    """Wrap fairseq's checkpoint loaders so user mistakes stop with one line (idempotent).

    Only failures are inspected (a successful load runs fairseq's code unchanged):
    - ``load_model_ensemble_and_task`` (fairseq-eval-lm/-generate/-interactive/-validate, hub):
      fairseq's "Model file not found" -> "checkpoint X does not exist";
    - ``load_checkpoint`` (fairseq-train): a missing ``--finetune-from-model``; a non-default
      ``--restore-file`` that does not exist when training a T2R model (fairseq would silently
      train from scratch: a typo must not cost a finetuning run);
    - ``load_checkpoint_to_cpu`` (everything): a file that torch cannot read at all.
    """
    import torch
    from fairseq import checkpoint_utils

    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([RequiresUserDir])
    if getattr(checkpoint_utils, "_fairseq_t2r_guarded", False):
        return

    load_to_cpu = checkpoint_utils.load_checkpoint_to_cpu
    load_ensemble = checkpoint_utils.load_model_ensemble_and_task
    load_for_training = checkpoint_utils.load_checkpoint

    @functools.wraps(load_to_cpu)
    def guarded_load_to_cpu(path, *args, **kwargs):
        if _is_local(path) and not os.path.exists(path):
            raise T2RUserError(f"checkpoint {path} does not exist: check the path")
        try:
            return load_to_cpu(path, *args, **kwargs)
        except Exception:
            reason = _unreadable_reason(path) if _is_local(path) and os.path.isfile(path) else None
            if reason is not None:
                raise _not_a_checkpoint(path, reason) from None
            raise

    @functools.wraps(load_ensemble)
    def guarded_load_ensemble(filenames, *args, **kwargs):
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

    @functools.wraps(load_for_training)
    def guarded_load_for_training(cfg, trainer, *args, **kwargs):
        suffix = getattr(trainer, "checkpoint_suffix", "") or ""
        last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        default_restore = cfg.restore_file == "checkpoint_last.pt"
        finetune = getattr(cfg, "finetune_from_model", None)
        if default_restore and finetune and not os.path.exists(last):
            if _is_local(finetune) and not os.path.exists(finetune):
                raise T2RUserError(
                    f"--finetune-from-model {finetune} does not exist: pass the path of the softmax "
                    f"(or T2R) checkpoint to start from"
                )
        if not default_restore and _is_local(cfg.restore_file) and _is_t2r_trainer(trainer):
            restore = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
            if not os.path.exists(restore):
                raise T2RUserError(
                    f"--restore-file {restore} does not exist (fairseq would train the T2R model from "
                    f"scratch): check the path, or use --finetune-from-model SOFTMAX.pt"
                )
        return load_for_training(cfg, trainer, *args, **kwargs)

    checkpoint_utils.load_checkpoint_to_cpu = guarded_load_to_cpu
    checkpoint_utils.load_model_ensemble_and_task = guarded_load_ensemble
    checkpoint_utils.load_checkpoint = guarded_load_for_training
    checkpoint_utils._fairseq_t2r_guarded = True
