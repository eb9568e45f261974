"""The one sentence per task that ends the demo: what T2R kept and what it gained, in this run's
own figures and nothing more (no claim the run cannot support: a single seed, no control arm)."""
from typing import Dict, List, Optional


def sentence(kind: str, task: Dict) -> Optional[str]:
    """``kind`` "lm" or "mt"; ``task`` one task of ``report.collect``. None when a figure is missing."""
    runs = task["runs"]
    t2r, teacher = runs.get("t2r", {}), runs.get("teacher", {})
    key = "test_ppl" if kind == "lm" else "bleu"
    if t2r.get(key) is None or teacher.get(key) is None:
        return None
    budget = f"finetuned for {t2r['updates']} updates"
    if teacher.get("updates"):
        budget += f" ({100 * t2r['updates'] / teacher['updates']:.0f}% of the teacher's {teacher['updates']})"
    if kind == "lm":
        quality = (f"test perplexity {t2r[key]:.1f} against the softmax teacher's {teacher[key]:.1f} "
                   f"({100 * (t2r[key] / teacher[key] - 1):+.0f}%)")
    else:
        quality = f"test BLEU {t2r[key]:.1f} against the softmax teacher's {teacher[key]:.1f} ({t2r[key] - teacher[key]:+.1f})"
    words = f"{kind.upper()}: T2R (the teacher's attention swapped, {budget}) reaches {quality}"
    speed = task.get("speed")
    if speed and speed.get("teacher") and speed.get("t2r"):
        a, b = speed["teacher"][-1], speed["t2r"][-1]
        ratio = a["ms_per_token"] / b["ms_per_token"]
        pace = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
        words += (f", and decodes a token {pace} at context {a['context']} with a state of "
                  f"{b['state_bytes'] / 2**20:.2f} MiB that does not grow (the teacher's: {a['state_bytes'] / 2**20:.2f} MiB)")
    return words + "."


def sentences(tasks: Dict[str, Dict], preset: str) -> List[str]:
    out = [s for s in (sentence(k, t) for k, t in tasks.items()) if s]
    if out and preset == "quick":
        out.append("(--quick: tiny models and few updates, a check that everything runs; its figures mean little.)")
    return out
