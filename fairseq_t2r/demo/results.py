"""Every figure of one task, read from the step logs, markers and JSON files a run leaves:
``collect`` is what ``results.json`` holds per task and what the report and the takeaway read."""
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional

from . import measure, teachers

# the task metric of each kind: (key in a run's figures, higher is better)
METRIC = {"lm": ("test_ppl", False), "mt": ("bleu", True)}
# the figures of each kind averaged over seeds: the task metric(s), then faithfulness to the teacher
FIGURES = {"lm": ["test_ppl", "top1_agreement", "kl"], "mt": ["bleu", "chrf", "bleu_vs_teacher"]}


def collect(plan, runner) -> Dict:
    k, p = plan.kind, plan.preset
    steps = {s.name: s for s in plan.steps()}
    seconds = {name: (runner.finished(s) or {}).get("seconds") for name, s in steps.items()}
    teacher_log = plan.teacher_log()
    teacher_curve = measure.valid_curve(teacher_log) if teacher_log else []
    runs = {"teacher": {"updates": teacher_curve[-1]["updates"] if teacher_curve else None,
                        "checkpoint": plan.checkpoint("teacher"), "curve": teacher_curve,
                        # a cached teacher's step only copied it: its training time is not this run's
                        "train_seconds": None if plan.cached_teacher else seconds.get(f"{k}/teacher")},
            "swapped": {"updates": 0, "checkpoint": plan.checkpoint("swapped")}}
    for name, variant, seed in plan.runs():
        r = {"variant": variant.name, "seed": seed, "checkpoint": plan.checkpoint(name), "updates": p.ft_updates,
             "train_seconds": seconds.get(f"{k}/{name}"), "curve": measure.valid_curve(runner.logfile(steps[f"{k}/{name}"]))}
        if variant.recipe == "scratch":
            r["updates"] = plan.teacher_updates + p.ft_updates
        if variant.recipe in ("transfer", "select"):
            stage = f"{k}/" + plan.stage_name(name, variant)
            r["train_seconds"] = _sum(seconds.get(stage), r["train_seconds"])
            r["transfer_updates"] = p.transfer_updates
            r["curve"] = [{**q, "updates": q["updates"] + p.transfer_updates} for q in r["curve"]]
        if variant.recipe == "select":  # the layer kept softmax, and the scores that chose it
            r["select"] = _selection(plan.checkpoint(plan.stage_name(name, variant)))
        runs[name] = r
    for name, r in runs.items():
        r.update(_scores(plan, runner, steps, name))
    out = {"runs": runs, "teacher_convergence": {**teachers.converged(teacher_curve),
                                                 "log": str(teacher_log) if teacher_curve else None,
                                                 "cached": str(plan.cached_teacher) if plan.cached_teacher else None}}
    out["recovery"] = recovery(plan, runner, steps, runs)
    out["by_variant"] = by_variant(runs, k)
    out["headline"] = headline(runs, k)
    controls = [r["curve"] for r in runs.values() if r.get("variant") == "control"]
    out["teacher_convergence"]["budget_check"] = teachers.budget_check(teacher_curve, controls)
    t, f = runs["teacher"], runs.get("t2r", {})
    if t["updates"] and f.get("updates"):
        # the finetuning budget against what the teacher cost (its updates; its time when trained in this run)
        out["finetune_cost"] = {"updates_fraction": round(f["updates"] / t["updates"], 3)}
        if t.get("train_seconds") and f.get("train_seconds"):
            out["finetune_cost"]["seconds_fraction"] = round(f["train_seconds"] / t["train_seconds"], 3)
    for name, path in (("data", plan.data_dir / "stats.json"), ("speed", plan.dir / "speed.json"),
                       ("compare", plan.dir / "compare" / "results.json")):
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def _selection(path) -> Optional[Dict]:
    """t2r-convert's record of its --t2r-select choice in ``path`` (None before the step ran)."""
    if not Path(path).exists():
        return None
    from ..checkpoint import load

    return load(path, mmap=True).get("t2r_select")


def _scores(plan, runner, steps, name) -> Dict:
    """The task metric of run ``name`` and its faithfulness to the teacher."""
    log = runner.logfile(steps[f"{plan.kind}/eval_{name}"])
    out = {"test_ppl": measure.perplexity(log)} if plan.kind == "lm" else \
        measure.translation_scores(log, plan.data_dir / "test.raw.de")
    faith = plan.dir / "faithfulness" / f"{name}.json"
    if faith.exists():
        out.update({key: v for key, v in json.loads(faith.read_text()).items() if key != "sentences"})
    return out


def recovery(plan, runner, steps, runs) -> Dict:
    """How many finetuning updates each run needs to come within 5% of the reference on the
    validation set (perplexity for the LM, BLEU with fairseq's --eval-bleu for translation): the
    control's final figure when there is a control (the conversion's own cost), else the teacher's."""
    key, higher = ("ppl", False) if plan.kind == "lm" else ("bleu", True)
    control = [q for q in runs.get("control", {}).get("curve", []) if key in q]
    if control:
        source, reference = "control", control[-1][key]
    elif plan.kind == "lm":
        teacher = [q for q in runs["teacher"].get("curve", []) if key in q]
        if not teacher:
            return {}
        source, reference = "teacher", teacher[-1][key]
    else:
        source = "teacher"
        reference = measure.translation_scores(runner.logfile(steps["mt/eval_teacher_valid"]),
                                               plan.data_dir / "valid.raw.de")["bleu"]
    target = 0.95 * reference if higher else 1.05 * reference
    out = {"metric": f"valid {key}", "reference": source, "value": reference, "target": round(target, 3), "runs": {}}
    for name, r in runs.items():
        curve = [q for q in r.get("curve", []) if key in q]
        if name in ("teacher", "control") or r.get("variant") == "scratch" or not curve:
            continue
        best = (max if higher else min)(q[key] for q in curve)
        out["runs"][name] = {"updates_to_target": measure.updates_to_reach(curve, key, target, higher),
                             "best": best, "budget": r["updates"]}
    return out


def by_variant(runs: Dict, kind: str) -> Dict:
    """Mean and spread over seeds of each arm's figures: {arm: {figure: {mean, spread, n, values}}};
    the spread is half the range (max - min) / 2, so two arms whose means differ by more than the sum
    of their spreads are separated by every seed pair."""
    groups: Dict[str, List[Dict]] = {}
    for r in runs.values():
        if "variant" in r:
            groups.setdefault(r["variant"], []).append(r)
    out = {}
    for variant, rs in groups.items():
        out[variant] = {}
        for key in FIGURES[kind]:
            values = [r[key] for r in rs if r.get(key) is not None]
            if values:
                out[variant][key] = mean_spread(values)
    return out


def mean_spread(values: List[float]) -> Dict:
    """{mean, spread, n, values} of one figure over seeds; the spread is half the range (by_variant)."""
    return {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) / 2, "n": len(values),
            "values": list(values)}


def separated(a: Dict, b: Dict) -> Optional[bool]:
    """Whether two arms' figures ({mean, spread, n}) differ by more than their spreads; None with one seed."""
    if a["n"] < 2 or b["n"] < 2:
        return None
    return abs(a["mean"] - b["mean"]) > a["spread"] + b["spread"]


def headline(runs: Dict, kind: str) -> Dict:
    """The conversion's cost against the softmax control of the same budget: the paper's T2R (swap +
    finetune), and the best converted arm of the run's first seed (``best``; T2R itself when it is)."""
    key, higher = METRIC[kind]
    t2r, control, teacher = runs.get("t2r", {}), runs.get("control", {}), runs.get("teacher", {})
    out = {"metric": key, "t2r": t2r.get(key), "control": control.get(key), "teacher": teacher.get(key)}
    if out["t2r"] is not None and out["control"] is not None:
        out["t2r_vs_control"] = _versus(out["t2r"], out["control"], kind)
    converted = {name: r[key] for name, r in runs.items() if r.get("variant") not in (None, "control", "scratch")
                 and r.get(key) is not None and "-s" not in name[len(r["variant"]):]}
    if converted and out["control"] is not None:
        best = (max if higher else min)(converted, key=converted.get)
        out["best"] = {"run": best, "variant": runs[best]["variant"], key: converted[best],
                       "vs_control": _versus(converted[best], out["control"], kind)}
    return out


def _versus(value, control, kind):
    """LM: perplexity ratio to the control; translation: BLEU difference."""
    return round(value / control, 4) if kind == "lm" else round(value - control, 2)


def _sum(*xs):
    return None if any(x is None for x in xs) else sum(xs)
