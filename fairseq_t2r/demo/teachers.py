"""Teachers: whether one has reached its plateau, and the cache that trains each one once.

The plateau criterion (``converged``): the best validation perplexity improved by less than
``TOLERANCE`` (relative) over the last ``LAST_SHARE`` of the teacher's updates. A teacher that
fails it is still improving, so finetuning it "recovers" quality the teacher never had and the
conversion looks better than it is: the report then says so in a warning.

A teacher trained on a complete schedule (its rate decaying to 0 at its cap) fails that criterion
by design: the last quarter, where the rate falls, lowers the loss by itself. The budget check
(``budget_check``) asks the question the comparison depends on instead: does the finetuning budget
still buy the softmax teacher anything? It holds when the control (the teacher trained on for that
budget; the mean over its seeds) ends with a best validation perplexity less than ``TOLERANCE``
below the teacher's. Either check holding makes the comparison against the control sound
(``comparison_sound``).

The cache keeps a trained teacher under a key of everything that determines it (the data step's
command with its input files' contents, and the teacher's fairseq-train flags except where they
write), so that a second run, or another preset with the same data and teacher settings, reuses
it and says so.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from ..checkpoint import atomic_write, remove_left_by_dead
from ..errors import T2RUserError
from . import measure

LAST_SHARE = 0.25  # the last quarter of the teacher's updates...
TOLERANCE = 0.01   # ...improved its best validation perplexity by less than 1%
CRITERION = (f"best validation perplexity improved by less than {100 * TOLERANCE:.0f}% over the last "
             f"{100 * LAST_SHARE:.0f}% of the teacher's updates")
BUDGET_CHECK = (f"the softmax control (the teacher trained on for the finetuning budget) ends less than "
                f"{100 * TOLERANCE:.0f}% below the teacher's best validation perplexity")
CACHE_FORMAT = 1  # bump when what a cached teacher holds changes


def converged(curve: List[dict], key: str = "ppl") -> Dict:
    """The plateau criterion on a validation curve ([{"updates", key}] in update order)."""
    points = [p for p in curve if key in p]
    out = {"criterion": CRITERION, "validations": len(points)}
    if not points:
        return {**out, "held": None, "why": "no validation in the training log"}
    last = points[-1]["updates"]
    cut = last * (1 - LAST_SHARE)
    before = [p[key] for p in points if p["updates"] <= cut]
    if not before:
        return {**out, "held": False, "why": f"no validation before update {cut:.0f}: too few to tell"}
    best_before, best = min(before), min(p[key] for p in points)
    gain = (best_before - best) / best_before
    return {**out, "held": gain < TOLERANCE, "updates": last, "best_before_last_share": best_before,
            "best": best, "improvement": round(gain, 4)}


def budget_check(teacher_curve: List[dict], control_curves: List[List[dict]]) -> Dict:
    """The budget check on validation curves ([{"updates", "ppl"}]): the teacher's and each control
    seed's; ``gain`` is the control's relative improvement on the teacher's best perplexity (negative:
    it got worse); held None without both curves."""
    best = [min(ppl) for ppl in ([p["ppl"] for p in c if "ppl" in p] for c in control_curves) if ppl]
    teacher = [p["ppl"] for p in teacher_curve if "ppl" in p]
    out = {"criterion": BUDGET_CHECK}
    if not teacher or not best:
        return {**out, "held": None}
    t, c = min(teacher), sum(best) / len(best)
    gain = (t - c) / t
    return {**out, "held": gain < TOLERANCE, "teacher": t, "control": round(c, 4), "gain": round(gain, 4)}


def budget_gain_words(check: Dict) -> str:
    """A budget check's figure in words: "validation perplexity 1.0% above the teacher's" (worse)."""
    g = check["gain"]
    return f"validation perplexity {100 * abs(g):.1f}% {'below' if g > 0 else 'above'} the teacher's"


def budget_lines(check: Dict) -> List[str]:
    """The budget check's verdict as the reports write it: one line, none when it was not made."""
    if check.get("held") is None:
        return []
    return [f"Budget check ({check['criterion']}): {'held' if check['held'] else '**not held**'} "
            f"(the control: {budget_gain_words(check)})."]


def comparison_sound(convergence: Dict) -> bool:
    """Whether the teacher is shown done for this comparison: the plateau criterion or the budget check held."""
    return convergence.get("held") is True or convergence.get("budget_check", {}).get("held") is True


def training_log(checkpoint: str) -> Optional[Path]:
    """A fairseq-train log beside a user's checkpoint (``*.log`` with validation lines), if any."""
    folder = Path(checkpoint).resolve().parent
    for log in sorted(folder.glob("*.log")):
        if measure.valid_curve(log):
            return log
    return None


# ---------------------------------------------------------------------- the cache
def cache_root() -> Path:
    from ..prep.corpora import default_cache_dir

    return default_cache_dir() / "teachers"


def cache_key(data_args: List[str], teacher_args: List[str], drop: List[str]) -> str:
    """A key of the data step's arguments (files replaced by their contents' hashes) and the
    teacher's flags, without the values in ``drop`` (the run's own folders)."""
    def norm(args):
        out = []
        for a in args:
            if a in drop:
                continue
            out.append(_file_hash(a) if os.path.isfile(a) else a)
        return out
    text = json.dumps({"format": CACHE_FORMAT, "data": norm(data_args), "teacher": norm(teacher_args)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def cached(key: str) -> Optional[Path]:
    """The folder of a cached teacher, if one is stored complete under ``key``."""
    folder = cache_root() / key
    return folder if (folder / "done.json").exists() else None


def store(key: str, checkpoint: str, log: Path, dictionary: Path, command: str):
    """Copy a trained teacher (its best checkpoint, training log and data dictionary) into the cache,
    all at once: a half-copied folder is never taken for a teacher."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_left_by_dead(root / f"{key}.tmp-")
    tmp = root / f"{key}.tmp-{os.getpid()}"
    try:
        tmp.mkdir()
        shutil.copy2(checkpoint, tmp / "checkpoint_best.pt")
        shutil.copy2(log, tmp / "train.log")
        shutil.copy2(dictionary, tmp / "dict.txt")
        atomic_write(tmp / "done.json", json.dumps({"command": command, "dict": _file_hash(str(dictionary))}) + "\n")
        final = root / key
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def reuse(folder: Path, dest: Path, dictionary: Path) -> None:
    """Copy a cached teacher into this run's ``dest`` folder, after checking it serves this data: a
    cached teacher fits only data with its dictionary (data preparation is deterministic, so a
    mismatch means the data step changed without its command changing)."""
    record = json.loads((folder / "done.json").read_text())
    if record["dict"] != _file_hash(str(dictionary)):
        raise T2RUserError(f"the cached teacher {folder} was trained on another dictionary than {dictionary}: "
                           f"remove {folder} and rerun (it will be trained again)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint_best.pt", "train.log"):
        shutil.copy2(folder / name, dest / f"{name}.tmp-{os.getpid()}")
        os.replace(dest / f"{name}.tmp-{os.getpid()}", dest / name)
    print(f"teacher: reused {folder} (trained by: {record['command']})",
          flush=True)


# ---------------------------------------------------------------------- a user's teacher
# the task a teacher of each family is trained on
TEACHER_TASKS = {"transformer_lm": "language_modeling", "transformer": "translation"}


def flags_from_checkpoint(path: str) -> List[str]:
    """The fairseq-train architecture flags that rebuild a checkpoint's model (either format),
    checked with fairseq-train's parser before any step runs."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    from .. import checkpoint
    from ..command_line import rebuild_flags

    args, arch = checkpoint.model_config(checkpoint.load(path))
    task = TEACHER_TASKS.get(ARCH_MODEL_NAME_REGISTRY.get(arch))
    if task is None:
        raise T2RUserError(f"teacher {path}: architecture {arch!r} is not a fairseq transformer_lm or transformer "
                           "model; the demo converts those two families")
    # the parse reads no data: the data directory is only a placeholder
    base = [str(Path(path).parent), "--task", task, "--arch", arch]
    return ["--arch", arch] + rebuild_flags(args, arch, base, hint=f"the demo cannot rebuild teacher {path}")
