"""benchmarks/quality.py's summary, targets, Markdown and plot, from ``results.collect``'s figures."""
from typing import Dict, List

from benchmarks.plots import pyplot
from fairseq_t2r.demo import teachers
from fairseq_t2r.demo.results import METRIC, separated
from fairseq_t2r.demo.variants import VARIANTS, split_run_name


def summarize(collected: Dict) -> Dict:
    """Per task: the teacher, the bare swap's cost, each arm's mean and spread against the control,
    and each target of issue 13 with whether it is met."""
    out = {}
    for k, t in collected.items():
        key, higher = METRIC[k]
        runs, arms = t["runs"], t["by_variant"]
        teacher, swapped = runs["teacher"].get(key), runs["swapped"].get(key)
        control = arms.get("control", {}).get(key)
        s = {"metric": key, "teacher": teacher, "teacher_updates": runs["teacher"].get("updates"),
             "teacher_converged": t["teacher_convergence"], "bare_swap": swapped,
             "bare_swap_cost": None if not (teacher and swapped) else
             round(swapped / teacher - 1, 4) if k == "lm" else round(swapped - teacher, 2), "arms": {}}
        for v, f in arms.items():
            if key not in f:
                continue
            row = {"label": VARIANTS[v].label, **{x: f[x] for x in f}}
            if control and v != "control":
                row["vs_control"] = round(f[key]["mean"] / control["mean"], 4) if k == "lm" else \
                    round(f[key]["mean"] - control["mean"], 2)
                row["separated_from_control"] = separated(f[key], control)
            s["arms"][v] = row
        s["targets"] = targets(k, s, arms, t.get("recovery", {}))
        out[k] = s
    return out


def targets(k: str, s: Dict, arms: Dict, rec: Dict) -> List[Dict]:
    key = METRIC[k][0]
    t2r, found = s["arms"].get("t2r", {}), []
    if k == "lm" and "vs_control" in t2r:
        found.append({"target": "T2R test perplexity at most 1.05x the control's", "value": t2r["vs_control"],
                      "met": t2r["vs_control"] <= 1.05})
        agree = t2r.get("top1_agreement", {}).get("mean")
        if agree is not None:
            found.append({"target": "T2R top-1 agreement with the teacher at least 0.90", "value": round(agree, 4),
                          "met": agree >= 0.90})
    if k == "mt" and "vs_control" in t2r:
        found.append({"target": "T2R BLEU at least the control's minus 0.5", "value": t2r["vs_control"],
                      "met": t2r["vs_control"] >= -0.5})
    for other in ("elu", "rfa"):
        if "t2r" in arms and other in arms and key in arms[other]:
            a, b = arms["t2r"][key], arms[other][key]
            ahead = a["mean"] < b["mean"] if k == "lm" else a["mean"] > b["mean"]
            sep = separated(a, b)
            found.append({"target": f"T2R ahead of {other.upper()} by more than the seed spread",
                          "value": f"{a['mean']:.3f} ± {a['spread']:.3f} vs {b['mean']:.3f} ± {b['spread']:.3f}",
                          # within the spreads (or one seed): not separable, neither met nor missed
                          "met": ahead if sep else None})
    reach = {v: [r["updates_to_target"] for name, r in rec.get("runs", {}).items() if split_run_name(name)[0] == v]
             for v in ("t2r", "transfer")}
    if reach["t2r"] and reach["transfer"]:
        found.append({"target": f"attention transfer reaches {rec['target']:.2f} ({rec['metric']}, 5% of the "
                                f"{rec['reference']}) in fewer updates than swap + finetune",
                      "value": f"transfer {reach['transfer']} vs swap {reach['t2r']} (per seed; None: not reached)",
                      "met": _fewer(reach["transfer"], reach["t2r"])})
    return found


def _fewer(a: List, b: List):
    """Whether runs ``a`` reach the target in fewer updates than runs ``b``, seed for seed (None: not
    reached in the budget): more seeds reaching it wins, then fewer updates over the seeds both have;
    None when neither reaches it at all (nothing to compare)."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    hits_a, hits_b = sum(x is not None for x in a), sum(x is not None for x in b)
    if hits_a == hits_b == 0:
        return None
    if hits_a != hits_b:
        return hits_a > hits_b
    both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return sum(x for x, _ in both) < sum(y for _, y in both)


VERDICTS = {True: "met", False: "missed", None: "not separable"}  # a target's "met"


def headlines(summary: Dict) -> List[str]:
    lines = []
    for k, s in summary.items():
        for t in s["targets"]:
            verdict = VERDICTS[t["met"]]
            lines.append(f"{k}: {t['target']}: {t['value']} -> {verdict.upper() if t['met'] is False else verdict}")
    return lines


def markdown(header: Dict, summary: Dict, collected: Dict) -> str:
    m = header["machine"]
    lines = ["# Conversion quality", "",
             f"`{header['command']}` -- {m['date']}, "
             f"{'%.0f min' % (header['seconds'] / 60) if header['seconds'] else 'report from the finished steps'} on {m['cpu']} "
             f"({m['cpu_count']} cores), torch {m['torch']}; {header['jobs']} runs side by side, one thread each; "
             f"seeds {header['seeds']}.", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in header["settings"].items()), ""]
    for k, s in summary.items():
        c = s["teacher_converged"]
        lines += [f"## {k.upper()}", "",
                  f"Teacher: {s['metric']} {s['teacher']}, {s['teacher_updates']} updates; plateau criterion "
                  f"({c['criterion']}): {'held' if c['held'] else 'NOT held'}"
                  f"{' (improvement %.2f%%)' % (100 * c['improvement']) if 'improvement' in c else ''}.",
                  *teachers.budget_lines(c.get("budget_check", {})),
                  f"Bare swap (no training): {s['metric']} {s['bare_swap']}, cost {s['bare_swap_cost']}.", "",
                  "| arm | " + s["metric"] + " (mean ± half-range, n) | vs control | separated from control | "
                  "faithfulness |", "|---|---|---|---|---|"]
        for row in s["arms"].values():
            f = row[s["metric"]]
            faith = "; ".join(f"{x} {row[x]['mean']:.4f} ± {row[x]['spread']:.4f}"
                              for x in ("top1_agreement", "kl", "bleu_vs_teacher") if x in row)
            lines.append(f"| {row['label']} | {f['mean']:.3f} ± {f['spread']:.3f} ({f['n']}) | "
                         f"{row.get('vs_control', '-')} | {row.get('separated_from_control', '-')} | {faith} |")
        lines += ["", "Targets:", ""]
        lines += [f"- {t['target']}: {t['value']} -> **{VERDICTS[t['met']]}**"
                  for t in s["targets"]]
        lines.append("")
    return "\n".join(lines)


def plot(path, summary: Dict):
    plt = pyplot()

    fig, axes = plt.subplots(1, len(summary), figsize=(7 * len(summary), 4.5), squeeze=False)
    for ax, (k, s) in zip(axes[0], summary.items()):
        names = list(s["arms"])
        means = [s["arms"][n][s["metric"]]["mean"] for n in names]
        spreads = [s["arms"][n][s["metric"]]["spread"] for n in names]
        ax.bar(range(len(names)), means, yerr=spreads, capsize=3, color="tab:blue")
        ax.axhline(s["teacher"], color="gray", linestyle=":", label="teacher")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylabel(f"test {s['metric']} (mean ± half-range over seeds)")
        lo = min(means + [s["teacher"]])
        ax.set_ylim(lo * 0.9 if k == "lm" else 0, None)
        ax.set_title(k.upper())
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
