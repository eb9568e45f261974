"""Checkpoint files: the one place that reads, decodes and writes them.

- ``load(path)``: the trusted loader. A missing file, a file torch cannot read and a pickle that
  is not a fairseq checkpoint each stop with one line (``T2RUserError``).
- ``model_config(state)`` / ``task_config(state)``: the saved model and task settings, whichever
  format wrote them (current fairseq's ``cfg``, the pre-hydra released checkpoints' ``args``).
- ``atomic_write(path, data)``: every file the plugin writes (checkpoints, JSON results, step
  markers, prepared corpora) appears whole or not at all.
- ``mark_state_dict`` / ``MARKER_KEY``: the ``RequiresUserDir`` marker every T2R checkpoint carries.
- ``is_new_tensor(name)``: the one rule for which tensors a T2R model may have that its softmax
  checkpoint lacks (the feature maps, and the state update's decays, gates and norm weights).

fairseq is imported only inside the functions that need it, torch likewise: the data preparation
tools write through ``atomic_write`` without paying either import.
"""
import copy
import glob
import os
import shutil
from argparse import Namespace

from .errors import RequiresUserDir, T2RUserError

# key of the marker in a checkpoint's top level (t2r-convert) and in the model state dict's
# metadata (every T2R model, see mark_state_dict)
MARKER_KEY = "fairseq_t2r"
# modules/feature_maps.py, modules/states/, modules/window.py
NEW_TENSOR_PARTS = (".feature_map.", ".state_update.", ".window.")


def is_new_tensor(name: str) -> bool:
    """True for the tensors a swap adds (feature maps; decays, gates, norm weights of a
    non-additive state): the only ones a softmax checkpoint may lack, the only ones attention
    transfer trains, the only ones t2r-convert initialises."""
    return any(part in "." + name for part in NEW_TENSOR_PARTS)


def mark_state_dict(module, state_dict, prefix, local_metadata):
    """state_dict post-hook of the T2R models: put the marker into the saved metadata."""
    local_metadata[MARKER_KEY] = RequiresUserDir


def is_local(path) -> bool:
    return isinstance(path, str) and "://" not in path


# --------------------------------------------------------------------------- reading

def unreadable_reason(path, error=None):
    """A short reason why torch cannot read ``path``, None if it can (only asked after a failure)."""
    if error is None:
        import torch

        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated zip, random bytes, a text file...
            error = e
        else:
            return None
    text = str(error).strip()
    first = text.splitlines()[0].split(". ")[0] if text else ""
    return f"{type(error).__name__}: {first[:100]}" if first else type(error).__name__


def not_a_checkpoint(path, reason) -> T2RUserError:
    if os.path.basename(str(path)).startswith("checkpoint_last"):
        # fairseq copies checkpoint_last.pt non-atomically: a run killed during that copy leaves it cut
        fix = ("it was probably cut short when its run was killed: delete it (or copy the newest intact "
               "checkpoint_*.pt over it) and rerun to resume from there")
    else:
        fix = "it may be truncated or not a checkpoint at all: pass a .pt file written by fairseq-train or t2r-convert"
    return T2RUserError(f"{path} is not a readable fairseq checkpoint ({reason}); {fix}")


def load(path, upgrade=False, mmap=False):
    """The checkpoint at ``path`` as a dict, on the CPU.

    Loads with ``weights_only=False``: fairseq checkpoints hold argparse Namespaces and numpy
    scalars, which torch's weights-only loader rejects. A checkpoint is code: load only files you
    trust. ``upgrade=True`` reads it as fairseq does (``load_checkpoint_to_cpu``: ``cfg`` as an
    OmegaConf config, old formats upgraded), for building a model with fairseq; ``mmap=True``
    leaves the tensors on disk (for reading the metadata of a big file).
    """
    if is_local(path) and not os.path.isfile(path):
        raise T2RUserError(f"checkpoint {path} does not exist: check the path")
    try:
        if upgrade:
            from fairseq import checkpoint_utils  # (patched by whoever imported fairseq_t2r.models/criterions)

            state = checkpoint_utils.load_checkpoint_to_cpu(path)
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # truncated file, random bytes, not a torch pickle
        # fairseq's upgrade can fail on a readable file too: only an unreadable one is the user's mistake
        reason = unreadable_reason(path, None if upgrade else e) if is_local(path) else None
        if reason is None:
            raise
        raise not_a_checkpoint(path, reason) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise T2RUserError(f"{path} is not a fairseq checkpoint (no 'model' state dict): pass a .pt file written by fairseq-train")
    return state


def _section(state, name):
    """``state['cfg'][name]`` as a plain dict or Namespace; None where the checkpoint has no cfg."""
    from omegaconf import OmegaConf

    cfg = state.get("cfg")
    if cfg is None or cfg.get(name) is None:
        return None
    section = cfg[name]
    if OmegaConf.is_config(section):
        section = OmegaConf.to_container(section, resolve=False)
    return section


def model_config(state):
    """(args Namespace with the architecture's defaults applied, arch name) of a checkpoint, either format."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    section = _section(state, "model")
    if isinstance(section, Namespace):
        args = copy.copy(section)
        arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    elif section is not None:
        args = Namespace(**dict(section))
        arch = section.get("arch") or section.get("_name")
    elif state.get("args") is not None:
        args = copy.copy(state["args"])
        arch = getattr(args, "arch", None)
    else:
        raise T2RUserError("checkpoint has neither 'cfg' nor 'args': it was not written by fairseq-train")
    if arch in ARCH_CONFIG_REGISTRY:
        ARCH_CONFIG_REGISTRY[arch](args)  # fills defaults an old checkpoint's args lack
    return args, arch


# model family of a checkpoint's (or --arch's) model, by the name fairseq registers the model under,
# and the task a family runs with
# (BART and mBART are translation models: fairseq's bart model is a TransformerModel with extras)
FAMILIES = {"transformer_lm": "lm", "t2r_transformer_lm": "lm", "transformer": "mt", "t2r_transformer": "mt",
            "bart": "mt", "t2r_bart": "mt"}
FAMILY_TASKS = {"lm": "language_modeling", "mt": "translation"}
FAMILY_NAMES = {"lm": "language-model", "mt": "translation"}


def family_of(arch):
    """"lm", "mt" or None (not a transformer family the plugin converts) for an architecture name."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    return FAMILIES.get(ARCH_MODEL_NAME_REGISTRY.get(arch))


def task_config(state) -> Namespace:
    """The saved task settings (``_name`` or ``task`` names the task); pre-hydra: the one flat Namespace."""
    section = _section(state, "task")
    if section is not None:
        return section if isinstance(section, Namespace) else Namespace(**dict(section))
    return state.get("args") or Namespace()


# --------------------------------------------------------------------------- writing

def remove_left_by_dead(prefix):
    """Delete the files and directories ``PREFIX<pid>`` whose process is gone: left by a writer
    that was killed (never one still in progress, whose process is alive)."""
    for stale in glob.glob(glob.escape(str(prefix)) + "*"):
        pid = stale[len(str(prefix)):]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if os.path.isdir(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.remove(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def atomic_write(path, data):
    """Write ``data`` (bytes, text, or any object for ``torch.save``) to ``path`` all at once:
    a temp file beside it, fsynced, then renamed over it. A killed writer leaves at most its
    temp file, which the next write to the same path removes."""
    path = os.fspath(path)
    remove_left_by_dead(f"{path}.tmp-")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray)):
                f.write(data)
            else:
                import torch

                torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
