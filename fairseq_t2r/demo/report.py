"""The demo's report folder: ``report.md`` (tables and the exact commands), ``results.json``
(every figure) and PNG plots (validation curves; time per token and state memory vs context)."""
import json
from pathlib import Path
from typing import Dict, List

from .presets import BEAM
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


def write(folder: Path, header: Dict, tasks: Dict[str, Dict], commands: List[str]):
    folder.mkdir(parents=True, exist_ok=True)
    results = {**header, **tasks}
    (folder / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plots = plot(folder, tasks)
    (folder / "report.md").write_text(markdown(header, tasks, commands, plots))


def markdown(header, tasks, commands, plots) -> str:
    lines = _header_lines(header)
    for k, t in tasks.items():
        lines += _task_lines(k, t)
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    lines += ["## Commands", "",
              "Every step, in the order it ran; the demo runs the same fairseq tools in-process "
              "(forked, one thread each), so these lines reproduce it one by one:", "", "```"]
    lines += commands + ["```", ""]
    return "\n".join(lines)


def _header_lines(header) -> List[str]:
    m = header["machine"]
    return ["# T2R demo report", "",
            f"Preset `{header['preset']}`, finished {m['date']} in {header['seconds'] / 60:.1f} min on "
            f"{m['cpu']} ({m['cpu_count']} cores, {m['memory']}), {m['platform']}, Python {m['python']}, "
            f"torch {m['torch']}; {header['jobs']} runs side by side, one thread each.", "",
            "Settings: " + ", ".join(f"{k} {v}" for k, v in header["settings"].items()), "",
            *[f"**{line}**" for line in header.get("takeaway", [])], ""]


def _task_lines(k, t) -> List[str]:
    """One task's section: its results table, then whichever of transfer, recovery, cost and speed it has."""
    runs = t["runs"]
    lines = [f"## {TASK_TITLES[k]}", ""]
    if "data" in t and "splits" in t["data"]:
        lines += ["Data: " + "; ".join(f"{name} {json.dumps(s)}" for name, s in t["data"]["splits"].items()), ""]
    lines += _lm_table(runs) if k == "lm" else _mt_table(runs)
    if "transfer" in runs:
        lines += ["", f"Attention transfer trains only the feature maps for the first "
                      f"{runs['transfer']['transfer_updates']} of its {runs['transfer']['updates']} updates."]
    rec = t.get("recovery")
    if rec and rec["runs"]:
        lines += _recovery_lines(rec)
    if "finetune_cost" in t:
        c = t["finetune_cost"]
        lines += ["", f"Finetuning cost (T2R swap + finetune) as a fraction of the teacher's training: "
                      f"{100 * c['updates_fraction']:.0f}% of its updates, {100 * c['seconds_fraction']:.0f}% "
                      "of its wall time (runs side by side share the cores: wall times are indicative)."]
    if "speed" in t:
        lines += _speed_lines(k, t["speed"])
    lines.append("")
    return lines


def _lm_table(runs) -> List[str]:
    teacher = runs["teacher"]
    lines = ["| model | updates | training time | test perplexity | vs teacher |", "|---|---|---|---|---|"]
    for name, r in runs.items():
        rel = "" if not (r.get("test_ppl") and teacher.get("test_ppl")) else \
            f"{100 * (r['test_ppl'] / teacher['test_ppl'] - 1):+.1f}%"
        lines.append(f"| {label(name)} | {_fmt(r['updates'])} | {_secs(r.get('train_seconds'))} | "
                     f"{_fmt(r.get('test_ppl'))} | {rel} |")
    return lines


def _mt_table(runs) -> List[str]:
    teacher = runs["teacher"]
    lines = ["| model | updates | training time | BLEU | chrF | BLEU vs teacher |", "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {label(name)} | {_fmt(r['updates'])} | {_secs(r.get('train_seconds'))} | "
                     f"{_fmt(r.get('bleu'))} | {_fmt(r.get('chrf'))} | {r['bleu'] - teacher['bleu']:+.2f} |")
    return lines + ["", f"sacreBLEU / chrF on the detokenised test set ({teacher.get('sentences')} sentences), "
                        f"beam {BEAM}, fairseq-generate. The training times of the two runs with BLEU curves (T2R swap "
                        "+ finetune, attention transfer + finetune) include fairseq's `--eval-bleu` beam search "
                        "on the validation set at every validation."]


def _recovery_lines(rec) -> List[str]:
    better = "higher" if "bleu" in rec["metric"] else "lower"
    lines = ["", f"Recovery on the validation set ({rec['metric']}, {better} is better): teacher "
                 f"{rec['teacher']:.2f}; within 5% means {rec['target']:.2f}.", "",
             f"| model | updates to come within 5% of the teacher | best {rec['metric']} in the budget |",
             "|---|---|---|"]
    for name, r in rec["runs"].items():
        reached = r["updates_to_target"]
        lines.append(f"| {label(name)} | {reached if reached is not None else 'not within ' + str(r['budget'])} "
                     f"| {r['best']:.2f} |")
    return lines


def _speed_lines(k, s) -> List[str]:
    what = "beams of one sentence, source as long as the context" if k == "mt" else "sequences"
    lines = ["", f"Decoding one token ({s['rows']} {what}, one thread), median of the last steps:", "",
             "| context | teacher ms/token | T2R ms/token | speed-up | teacher state | T2R state |",
             "|---|---|---|---|---|---|"]
    for a, b in zip(s["teacher"], s["t2r"]):
        lines.append(f"| {a['context']} | {a['ms_per_token']:.2f} | {b['ms_per_token']:.2f} | "
                     f"{a['ms_per_token'] / b['ms_per_token']:.2f}x | {_mib(a['state_bytes'])} | "
                     f"{_mib(b['state_bytes'])} |")
    return lines


def _fmt(x):
    return "-" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))


def _secs(x):
    return "-" if x is None else (f"{x:.0f} s" if x < 120 else f"{x / 60:.1f} min")


def _mib(b):
    return f"{b / 2**20:.2f} MiB"


def plot(folder: Path, tasks: Dict[str, Dict]) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = [(k, "ppl") for k in tasks] + [(k, "bleu") for k, t in tasks.items()
                                             if any("bleu" in p for r in t["runs"].values() for p in r.get("curve", []))]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (k, key) in zip(axes[0], panels):
        t = tasks[k]
        for name, r in t["runs"].items():
            pts = [p for p in r.get("curve", []) if key in p]
            if pts:
                ax.plot([p["updates"] for p in pts], [p[key] for p in pts], marker=".", label=label(name))
        if key == "ppl":
            ax.set_yscale("log")
        else:
            ax.axhline(t["recovery"]["teacher"], color="gray", linestyle=":", label="teacher (beam 4)")
        ax.set_xlabel("updates (each run's own)")
        ax.set_ylabel("validation perplexity" if key == "ppl" else "validation BLEU")
        ax.set_title(TASK_TITLES[k].split(" (")[0])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=110)
    plt.close(fig)
    written.append("curves.png")

    speed = {k: t["speed"] for k, t in tasks.items() if "speed" in t}
    if speed:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for k, s in speed.items():
            for name, style in (("teacher", "-o"), ("t2r", "--s")):
                ctx = [r["context"] for r in s[name]]
                axes[0].plot(ctx, [r["ms_per_token"] for r in s[name]], style, label=f"{k}: {name}")
                axes[1].plot(ctx, [r["state_bytes"] / 2**20 for r in s[name]], style, label=f"{k}: {name}")
        for ax, ylabel in zip(axes, ("ms per generated token", "incremental state (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "speed.png", dpi=110)
        plt.close(fig)
        written.append("speed.png")
    return written
