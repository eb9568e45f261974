"""The report's words and tables for one task (``results.collect``'s figures), in Markdown lines."""
import json
from typing import Dict, List

from . import teachers
from .presets import BEAM
from .results import FIGURES, METRIC
from .variants import VARIANTS, split_run_name

TASK_TITLES = {"lm": "Language model (English: State of the Union + Brown corpus)",
               "mt": "Translation EN→DE (LibreOffice help pages)"}
FIXED_LABELS = {"teacher": "softmax teacher", "swapped": "T2R right after swap (no training)"}


def label(name: str) -> str:
    """The report's words for run ``name`` ("t2r-s2": the T2R arm's run with seed 2)."""
    if name in FIXED_LABELS:
        return FIXED_LABELS[name]
    variant, seed = split_run_name(name)
    return VARIANTS[variant].label + (f" [{seed}]" if seed else "")


def task_lines(k: str, t: Dict) -> List[str]:
    """One task's section: teacher, headline, results, seeds, then transfer, recovery, cost and speed."""
    runs = t["runs"]
    lines = [f"## {TASK_TITLES[k]}", ""]
    if "data" in t and "splits" in t["data"]:
        lines += ["Data: " + "; ".join(f"{name} {json.dumps(s)}" for name, s in t["data"]["splits"].items()), ""]
    lines += teacher_lines(t) + headline_lines(k, t)
    lines += results_table(k, runs)
    lines += seeds_table(k, t.get("by_variant", {}))
    transfer = next((r for r in runs.values() if r.get("variant") == "transfer"), None)
    if transfer:
        lines += ["", f"Attention transfer trains only the feature maps for the first "
                      f"{transfer['transfer_updates']} of its {transfer['updates']} updates."]
    rec = t.get("recovery")
    if rec and rec["runs"]:
        lines += recovery_lines(rec)
    if "finetune_cost" in t:
        c = t["finetune_cost"]
        lines += ["", f"Finetuning budget (each arm): {100 * c['updates_fraction']:.0f}% of the teacher's updates"
                      + (f", {100 * c['seconds_fraction']:.0f}% of its wall time (runs side by side share the cores: "
                         "wall times are indicative)." if "seconds_fraction" in c else ".")]
    if "speed" in t:
        lines += speed_lines(k, t["speed"])
    return lines + [""]


def teacher_lines(t: Dict) -> List[str]:
    c, teacher = t["teacher_convergence"], t["runs"]["teacher"]
    where = f"cached ({c['cached']}), reused" if c.get("cached") else "trained in this run" if c.get("log") else \
        "your checkpoint"
    if c["held"] is None:
        verdict = f"not checked: {c['why']}"
    elif c["held"]:
        verdict = f"held (it improved {100 * c['improvement']:.2f}%)"
    else:
        verdict = f"**not held**: {c.get('why') or 'it improved %.1f%%' % (100 * c['improvement'])}"
    lines = [f"Teacher: {where}, {teacher.get('updates') or '?'} updates. Plateau criterion ({c['criterion']}): "
             f"{verdict}."]
    budget = c.get("budget_check", {})
    lines += teachers.budget_lines(budget) + [""]
    if c["held"] is True:
        if budget.get("held") is False:  # at its plateau, yet a restarted schedule still gains
            lines += ["> The teacher's curve had leveled off, yet the control, trained on from it with a fresh warmup, "
                      "still improved: a restarted schedule buys this softmax model something. The control has the "
                      "same restart as the converted arms, so judge them against the control, not the teacher.", ""]
        return lines
    if teachers.comparison_sound(c):
        lines += ["> The teacher's curve still fell over its last quarter (partly the rate decaying to 0 there), so a "
                  "longer schedule would train a better teacher, and converting a better-trained teacher has cost "
                  "more here. But the finetuning budget buys this teacher nothing more (budget check), so the "
                  "converted arms' cost against the control is not flattered by extra training.", ""]
    else:
        lines += ["> **Warning: this teacher is not shown to be converged.** Finetuning then goes on training it, "
                  "so every finetuned model gains from that extra training as well as losing what converting costs: "
                  "judge the converted models against the control (the teacher trained for the same budget), not "
                  "against the teacher.", ""]
    return lines


def headline_lines(k: str, t: Dict) -> List[str]:
    h = t.get("headline", {})
    if h.get("t2r_vs_control") is None:
        return []
    def cost(value, versus):
        return (f"test perplexity {value:.2f} against {h['control']:.2f}, {100 * (versus - 1):+.1f}%" if k == "lm"
                else f"test BLEU {value:.2f} against {h['control']:.2f}, {versus:+.2f}")

    best = h.get("best")
    lead = ""
    if best and best["run"] != "t2r":  # the best arm first, then the paper's T2R
        lead = f"the best arm, {label(best['run'])}: {cost(best[h['metric']], best['vs_control'])}; the paper's "
    return [f"**The conversion's cost** (against the softmax control trained for the same updates): {lead}"
            f"T2R swap + finetune: {cost(h['t2r'], h['t2r_vs_control'])}.", ""]


def results_table(k: str, runs: Dict) -> List[str]:
    key = METRIC[k][0]
    control = runs.get("control", {}).get(key)
    if k == "lm":
        head = "| model | updates | training time | test perplexity | vs control | top-1 agreement | KL(teacher‖model) |"
    else:
        head = "| model | updates | training time | BLEU | chrF | vs control | BLEU against the teacher's output |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in runs.items():
        vs = "" if control is None or r.get(key) is None else \
            (f"{100 * (r[key] / control - 1):+.1f}%" if k == "lm" else f"{r[key] - control:+.2f}")
        cells = [label(name), _fmt(r.get("updates")), _secs(r.get("train_seconds"))]
        cells += [_fmt(r.get(key)), vs, _fmt(r.get("top1_agreement"), 3), _fmt(r.get("kl"), 4)] if k == "lm" else \
            [_fmt(r.get("bleu")), _fmt(r.get("chrf")), vs, _fmt(r.get("bleu_vs_teacher"))]
        lines.append("| " + " | ".join(cells) + " |")
    if k == "mt":
        lines += ["", f"sacreBLEU / chrF on the detokenised test set, beam {BEAM}, fairseq-generate; the last column "
                      "scores each model's translations against the teacher's own (100: the same output)."]
    else:
        lines += ["", "Top-1 agreement and KL: next-token predictions against the teacher's on the test set."]
    return lines


def seeds_table(k: str, by_variant: Dict) -> List[str]:
    rows = {v: f for v, f in by_variant.items() if any(x["n"] > 1 for x in f.values())}
    if not rows:
        return []
    keys = FIGURES[k]
    lines = ["", "Over seeds: mean ± half the range (n seeds); a difference smaller than the two spreads together "
                 "is not a ranking.", "", "| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for v, f in rows.items():
        cells = [f"{f[x]['mean']:.3f} ± {f[x]['spread']:.3f} ({f[x]['n']})" if x in f else "-" for x in keys]
        lines.append(f"| {VARIANTS[v].label} | " + " | ".join(cells) + " |")
    return lines


def recovery_lines(rec) -> List[str]:
    better = "higher" if "bleu" in rec["metric"] else "lower"
    lines = ["", f"Recovery on the validation set ({rec['metric']}, {better} is better): {rec['reference']} "
                 f"{rec['value']:.2f}; within 5% means {rec['target']:.2f}.", "",
             f"| model | updates to come within 5% of the {rec['reference']} | best {rec['metric']} in the budget |",
             "|---|---|---|"]
    for name, r in rec["runs"].items():
        reached = r["updates_to_target"]
        lines.append(f"| {label(name)} | {reached if reached is not None else 'not within ' + str(r['budget'])} "
                     f"| {r['best']:.2f} |")
    return lines


def speed_lines(k, s) -> List[str]:
    what = "beams of one sentence, source as long as the context" if k == "mt" else "sequences"
    lines = ["", f"Decoding one token ({s['rows']} {what}, one thread), median of the last steps "
                 f"(converted model: {label(s.get('converted_run', 't2r'))}):", "",
             "| context | teacher ms/token | converted ms/token | speed-up | teacher state | converted state |",
             "|---|---|---|---|---|---|"]
    for a, b in zip(s["teacher"], s["t2r"]):
        lines.append(f"| {a['context']} | {a['ms_per_token']:.2f} | {b['ms_per_token']:.2f} | "
                     f"{a['ms_per_token'] / b['ms_per_token']:.2f}x | {_mib(a['state_bytes'])} | "
                     f"{_mib(b['state_bytes'])} |")
    return lines


def _fmt(x, digits: int = 2):
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _secs(x):
    return "-" if x is None else (f"{x:.0f} s" if x < 120 else f"{x / 60:.1f} min")


def _mib(b):
    return f"{b / 2**20:.2f} MiB"
