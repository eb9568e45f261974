"""The demo's report folder: ``report.md`` (tables and the exact commands), ``results.json``
(every figure) and PNG plots (validation curves; time per token and state memory vs context)."""
import json
from pathlib import Path
from typing import Dict, List

from ..compare import report as compare_report
from .tables import TASK_TITLES, label, task_lines
from .variants import split_run_name

LIMITS = [
    "## What these figures show, and what they do not", "",
    "- The control is the softmax teacher trained on for the converted arms' budget and schedule: the "
    "difference between a converted arm and the control is the cost of converting, not of training less.",
    "- A teacher that fails the plateau criterion makes every finetuned arm look better than it is (see the "
    "warning above when it applies).",
    "- One seed per arm unless the table over seeds says otherwise: differences of a few percent between arms "
    "are within what a second seed can change; `benchmarks/quality.py` runs several.",
    "- Small models on a small corpus, on a CPU: the figures say how the recipes compare at this size, not "
    "what they give a large pretrained model.", ""]


def write(folder: Path, header: Dict, tasks: Dict[str, Dict], commands: List[str]):
    folder.mkdir(parents=True, exist_ok=True)
    results = {**header, **tasks}
    (folder / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plots = plot(folder, tasks)
    (folder / "report.md").write_text(markdown(header, tasks, commands, plots))


def markdown(header, tasks, commands, plots) -> str:
    lines = _header_lines(header)
    for k, t in tasks.items():
        lines += task_lines(k, t) + where_lines(k, t)
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    lines += LIMITS + ["## Commands", "",
              "Every step, in the order it ran; the demo runs the same fairseq tools in-process "
              "(forked, one thread each), so these lines reproduce it one by one:", "", "```"]
    lines += commands + ["```", ""]
    return "\n".join(lines)


def _baseline(compare: Dict) -> str:
    return "control" if "control" in compare["models"] else "teacher"


def where_lines(k: str, t: Dict) -> List[str]:
    """The short "where it loses" section: one line per arm from t2r-compare's run on this task."""
    if "compare" not in t:
        return []
    c = t["compare"]
    return [f"### Where each arm loses ({TASK_TITLES[k].split(' (')[0]}, t2r-compare)", "",
            f"Ratios against `{_baseline(c)}`" + ("; recall tokens complete a bigram seen earlier in the same block" if k == "lm" else "") + ". "
            f"Every table: `{k}/compare/report.md` ({c['seconds']['total']:.0f} s).", "",
            *compare_report.summary(c, _baseline(c))]


def _header_lines(header) -> List[str]:
    m = header["machine"]
    return ["# T2R demo report", "",
            f"Preset `{header['preset']}`, finished {m['date']} in {header['seconds'] / 60:.1f} min on "
            f"{m['cpu']} ({m['cpu_count']} cores, {m['memory']}), {m['platform']}, Python {m['python']}, "
            f"torch {m['torch']}; {header['jobs']} runs side by side, one thread each.", "",
            "Settings: " + ", ".join(f"{k} {v}" for k, v in header["settings"].items()), "",
            *[f"**{line}**" for line in header.get("takeaway", [])], ""]


def plot(folder: Path, tasks: Dict[str, Dict]) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # per task: the teacher's curve (its plateau), then the finetuning curves of the first seed's runs
    panels = [(k, "teacher", "ppl") for k in tasks] + [(k, "finetune", "ppl") for k in tasks]
    panels += [(k, "finetune", "bleu") for k, t in tasks.items()
               if any("bleu" in p for r in t["runs"].values() for p in r.get("curve", []))]
    # a grid two panels wide, readable at page width; every arm on every panel
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (k, which, key) in zip(axes.flat, panels):
        t = tasks[k]
        for name, r in t["runs"].items():
            pts = [p for p in r.get("curve", []) if key in p]
            if pts and (name == "teacher") == (which == "teacher") and not split_run_name(name)[1]:
                ax.plot([p["updates"] for p in pts], [p[key] for p in pts], marker=".", label=label(name))
        if key == "ppl":
            ax.set_yscale("log")
        else:
            rec = t.get("recovery") or {}
            if "value" in rec:
                ax.axhline(rec["value"], color="gray", linestyle=":", label=f"{rec['reference']} (beam 4)")
        ax.set_xlabel("updates (each run's own)")
        ax.set_ylabel(f"validation {'perplexity' if key == 'ppl' else 'BLEU'}")
        ax.set_title(f"{TASK_TITLES[k].split(' (')[0]}: {which}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=110)
    plt.close(fig)
    written.append("curves.png")

    compared = [(k, t["compare"]) for k, t in tasks.items() if "compare" in t]
    if compared:  # one plot of where the arms lose: the LM's (recall, copying, passkey, length) when there is one
        k, c = compared[0]
        compare_report.plot(c, _baseline(c), folder / "where_it_loses.png")
        written.append("where_it_loses.png")

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
