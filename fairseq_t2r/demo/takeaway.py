"""The one sentence per task that ends the demo: what converting cost against the softmax control
(the teacher trained for the same budget), how faithful T2R stays to its teacher, and what it
gains in decoding, in this run's own figures and nothing more."""
from typing import Dict, List, Optional

from . import teachers
from .variants import VARIANTS


def sentence(kind: str, task: Dict) -> Optional[str]:
    """``kind`` "lm" or "mt"; ``task`` one task of ``results.collect``. None when a figure is missing."""
    h, runs = task.get("headline", {}), task["runs"]
    if h.get("t2r_vs_control") is None:
        return None
    t2r = runs["t2r"]
    if kind == "lm":
        quality = (f"test perplexity {h['t2r']:.1f} against {h['control']:.1f} for the softmax control "
                   f"({100 * (h['t2r_vs_control'] - 1):+.1f}%)")
        if t2r.get("top1_agreement") is not None:
            quality += f", agreeing with the teacher's next-token choice {100 * t2r['top1_agreement']:.0f}% of the time"
    else:
        quality = f"test BLEU {h['t2r']:.1f} against {h['control']:.1f} for the softmax control ({h['t2r_vs_control']:+.1f})"
        if t2r.get("bleu_vs_teacher") is not None:
            quality += f", {t2r['bleu_vs_teacher']:.1f} BLEU against the teacher's own translations"
    words = (f"{kind.upper()}: converting to T2R and finetuning for {t2r['updates']} updates gives {quality} "
             f"(the control: the teacher trained for the same {t2r['updates']} updates)")
    best = h.get("best")
    if best and best["run"] != "t2r":
        # lead with the best converted arm of the run, then the paper's T2R
        figure = (f"test perplexity {best['test_ppl']:.1f} ({100 * (best['vs_control'] - 1):+.1f}% against the control)"
                  if kind == "lm" else f"test BLEU {best['bleu']:.1f} ({best['vs_control']:+.1f} against the control)")
        words = (f"{kind.upper()}: the best conversion of this run, {VARIANTS[best['variant']].label} "
                 f"(`{best['run']}`), gives {figure}; the paper's recipe: " + words[len(kind) + 2:])
    speed = task.get("speed")
    if speed and speed.get("teacher") and speed.get("t2r"):
        a, b = speed["teacher"][-1], speed["t2r"][-1]
        ratio = a["ms_per_token"] / b["ms_per_token"]
        pace = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
        grows = "that does not grow" if kind == "lm" else \
            f"that does not grow with the translation (it holds the {a['context']}-token source)"
        words += (f"; it decodes a token {pace} at context {a['context']} with a state of "
                  f"{b['state_bytes'] / 2**20:.2f} MiB {grows} (the teacher's: {a['state_bytes'] / 2**20:.2f} MiB)")
    if not teachers.comparison_sound(task.get("teacher_convergence", {})):
        words += "; but the teacher is not shown converged, so these figures flatter the conversion"
    return words + "."


def sentences(tasks: Dict[str, Dict], preset: str) -> List[str]:
    out = [s for s in (sentence(k, t) for k, t in tasks.items()) if s]
    if out and preset == "quick":
        out.append("(--quick: tiny models and few updates, a check that everything runs; its figures mean little.)")
    elif out:
        out.append("(One seed per arm: differences of a few percent are not a ranking; benchmarks/quality.py "
                   "runs several seeds.)")
    return out
