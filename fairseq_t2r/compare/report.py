"""``report.md``, ``results.json`` and ``compare.png`` of a ``t2r-compare`` run."""
import json
from pathlib import Path
from typing import Dict, List, Optional

from ..checkpoint import atomic_write
from .recall import PART_WORDS, PARTS


def _f(x, digits=2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def ratio(a, b) -> Optional[float]:
    return a / b if a is not None and b else None


def recall_lines(r: Dict, baseline: str) -> List[str]:
    base = r[baseline]
    lines = [f"Perplexity per part of the test tokens, and its ratio to `{baseline}`'s on the same tokens; top-1 "
             "agreement and KL(teacher || model) on each part. Parts: " +
             "; ".join(f"`{p}`: {w}" for p, w in PART_WORDS.items()) + ".", "",
             "| model | " + " | ".join(f"{p} ppl (x {baseline})" for p in PARTS) + " | " +
             " | ".join(f"{p} agree / KL" for p in PARTS) + " |",
             "|---" * (1 + 2 * len(PARTS)) + "|"]
    lines.append("| share of tokens | " + " | ".join(f"{base[p]['share']:.1%} ({base[p]['tokens']})" for p in PARTS)
                 + " |" + " |" * len(PARTS))
    for name, parts in r.items():
        cells = [f"{_f(parts[p]['ppl'])} ({_f(ratio(parts[p]['ppl'], base[p]['ppl']), 3)})" for p in PARTS]
        cells += [f"{_f(parts[p]['top1_agreement'], 3)} / {_f(parts[p]['kl'], 3)}" for p in PARTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def lm_lines(res: Dict, baseline: str) -> List[str]:
    lines = []
    if "recall" in res:
        lines += ["## Recall tokens against the rest", "", *recall_lines(res["recall"], baseline)]
    if "copying" in res:
        c = res["copying"]
        lines += ["## Copying", "", f"A {c['span']}-token span of test text repeated after a gap of D tokens of other "
                  f"test text ({c['trials']} spans): mean loss (nats) on the second copy / on the first; lower is "
                  "better, 0 is a perfect copy, 1 means the first copy did not help.", "",
                  "| model | " + " | ".join(f"D={d}" for d in c["gaps"]) + " |", "|---" * (1 + len(c["gaps"])) + "|"]
        for name, pts in c["models"].items():
            lines.append(f"| {name} | " + " | ".join("n/a" if p is None else f"{p['second']:.2f} / {p['first']:.2f}"
                                                      f" ({_f(p['ratio'])})" for p in pts) + " |")
        lines.append("")
    if "passkey" in res:
        p = res["passkey"]
        lines += ["## Passkey", ""]
        if "skipped" in p:
            lines += [f"Not run: {p['skipped']}.", ""]
        else:
            lines += [f"A {p['digits']}-digit key stated once in test text, asked for at the end, decoded greedily "
                      f"({p['trials']} trials per length, fixed seed): share of keys with every digit right "
                      "(share of digits right given the digits before them).", "",
                      "| model | " + " | ".join(f"{n} tokens" for n in p["lengths"]) + " |",
                      "|---" * (1 + len(p["lengths"])) + "|"]
            for name, pts in p["models"].items():
                lines.append(f"| {name} | " + " | ".join(
                    "n/a" if x is None else f"{x['accuracy']:.0%} ({x['digit_accuracy']:.0%})" for x in pts) + " |")
            lines.append("")
    if "length" in res:
        ln = res["length"]
        lines += ["## Perplexity by context length", "",
                  f"The same {ln['tokens']} test tokens in blocks of each length (trained: {res['trained_length']}); "
                  "n/a: the model's learned positions end before.", "",
                  "| model | " + " | ".join(str(n) for n in ln["lengths"]) + " |", "|---" * (1 + len(ln["lengths"])) + "|"]
        for name, pts in ln["models"].items():
            lines.append(f"| {name} | " + " | ".join(_f(x) for x in pts) + " |")
        lines.append("")
    if "generation" in res:
        g = res["generation"]
        lines += ["## Generation", "", f"{g['prompts']} test prompts of {g['prompt_tokens']} tokens continued by "
                  f"{g['new_tokens']} tokens, greedily and by top-10 sampling (fixed seed): chrF against the teacher's "
                  "continuation of the same prompt, and the teacher's perplexity of the continuation.", "",
                  "| model | greedy chrF vs teacher | greedy teacher ppl | sampled chrF vs teacher | sampled teacher ppl |",
                  "|---|---|---|---|---|"]
        for name in g["modes"]["greedy"]:
            gr, sa = g["modes"]["greedy"][name], g["modes"]["sampled"][name]
            lines.append(f"| {name} | {gr['chrf_vs_teacher']:.1f} | {gr['teacher_ppl']:.1f} | "
                         f"{sa['chrf_vs_teacher']:.1f} | {sa['teacher_ppl']:.1f} |")
        lines += ["", f"Prompt: `{g['example_prompt']}`", ""]
        lines += [f"- {name} (greedy): `{ex[0]}`" for name, ex in g["examples"].items()] + [""]
    return lines


def mt_lines(res: Dict) -> List[str]:
    t = res["translation"]
    lines = ["## Translation by source length", "",
             f"{t['sentences']} test sentences, beam {t['beam']}: BLEU / chrF against the references, and BLEU against "
             "the teacher's translations, by source length (subword tokens).", "",
             "| model | all | " + " | ".join(f"{lo}-{hi}" for lo, hi in t["buckets"]) + " |",
             "|---" * (2 + len(t["buckets"])) + "|"]
    for name, r in t["models"].items():
        cells = [f"{r['overall']['bleu']:.1f} / {r['overall']['chrf']:.1f} ({r['overall']['bleu_vs_teacher']:.1f})"]
        cells += [f"{b['bleu']:.1f} / {b['chrf']:.1f} ({b['bleu_vs_teacher']:.1f})" for b in r["by_length"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    shares = {name: r["within_window"] for name, r in t["models"].items() if "within_window" in r}
    if shares:
        ws = list(next(iter(shares.values())))
        lines += ["", "Share of each model's outputs that fit in a window of W decoder positions (there a "
                  "`--t2r-window W` self-attention is plain softmax): " + "; ".join(
                      f"{name} " + ", ".join(f"W={w} {100 * s[w]:.0f}%" for w in ws) for name, s in shares.items()) + "."]
    docs = next(iter(t["models"].values()))["documents"]
    if docs:
        lines += ["", "## Documents: k consecutive test sentences as one source", "",
                  "BLEU against the joined references (BLEU against the teacher's translation of the same document).", "",
                  "| model | " + " | ".join(f"k={d['sentences_joined']} ({d['mean_source_tokens']:.0f} tokens, "
                                           f"{d['documents']} docs)" for d in docs) + " |",
                  "|---" * (1 + len(docs)) + "|"]
        for name, r in t["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{d['bleu']:.1f} ({d['bleu_vs_teacher']:.1f})"
                                                      for d in r["documents"]) + " |")
    return lines + [""]


def speed_lines(s: Dict) -> List[str]:
    lines = ["## Decoding time and state", "", f"Per generated token ({s['rows']} rows), and the incremental state "
             "at the end, at each context length.", "",
             "| model | " + " | ".join(f"{c}: ms / MiB" for c in s["contexts"]) + " |", "|---" * (1 + len(s["contexts"])) + "|"]
    for name, pts in s["models"].items():
        lines.append(f"| {name} | " + " | ".join("n/a" if p is None else f"{p['ms_per_token']:.2f} / "
                                                  f"{p['state_bytes'] / 2**20:.2f}" for p in pts) + " |")
    return lines + [""]


def summary(res: Dict, baseline: str) -> List[str]:
    """One line per converted model: where it loses (the figures the sections below detail)."""
    out = []
    for name, info in res["models"].items():
        if name == baseline:
            continue
        bits = []
        if "recall" in res:
            r, b = res["recall"][name], res["recall"][baseline]
            rr, ro = ratio(r["repeated-2"]["ppl"], b["repeated-2"]["ppl"]), ratio(r["other"]["ppl"], b["other"]["ppl"])
            bits.append(f"perplexity x{_f(rr, 3)} on recall tokens, x{_f(ro, 3)} on the rest")
        if "copying" in res:
            pts = [p for p in res["copying"]["models"][name] if p]
            if pts:
                bits.append(f"copy loss ratio {_f(pts[0]['ratio'])} at D={pts[0]['gap']}, {_f(pts[-1]['ratio'])} "
                            f"at D={pts[-1]['gap']}")
        if "passkey" in res and "models" in res["passkey"]:
            pk = res["passkey"]["models"][name]
            bits.append("passkey " + ", ".join("n/a" if x is None else f"{x['accuracy']:.0%}" for x in pk) +
                        " at " + ", ".join(str(n) for n in res["passkey"]["lengths"]) + " tokens")
        if "length" in res:
            pts, lengths = res["length"]["models"][name], res["length"]["lengths"]
            bits.append("perplexity " + " -> ".join(_f(x, 1) for x in pts) + f" from 1x to "
                        f"{lengths[-1] // res['trained_length']}x the trained length")
        if "translation" in res:
            o = res["translation"]["models"][name]["overall"]
            bits.append(f"BLEU {o['bleu']:.1f} ({o['bleu_vs_teacher']:.1f} against the teacher)")
        out.append(f"- **{name}** ({'converted' if info['converted'] else 'softmax'}, {info['positions']} positions): "
                   + "; ".join(bits))
    return out + [""]


def markdown(res: Dict, baseline: str, command: str) -> str:
    lines = ["# t2r-compare", "", f"`{command}`", "",
             f"Task: {'language model' if res['task'] == 'lm' else 'translation'}; data `{res['data']}` "
             f"({res['subset']} split); " + (f"trained length {res['trained_length']} tokens; " if res["task"] == "lm" else "")
             + f"ratios are against "
             f"`{baseline}`; {res['seconds']['total']:.0f} s in all" + (" (--quick: fewer trials)" if res["quick"] else "")
             + ".", "", "## Where each model loses", "", *summary(res, baseline)]
    if res["task"] == "lm":
        lines += lm_lines(res, baseline)
    elif "translation" in res:
        lines += mt_lines(res)
    if "speed" in res:
        lines += speed_lines(res["speed"])
    lines += ["![compare.png](compare.png)", "",
              "Time per step (s): " + ", ".join(f"{k} {v}" for k, v in res["seconds"].items()), ""]
    return "\n".join(lines)


def plot(res: Dict, baseline: str, path: Path):
    """A 2 x 2 grid (LM: recall, copying, passkey, length) or 1 x 2 (translation: by length, documents),
    every model on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["models"])
    if res["task"] == "lm":
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
        ax = axes[0][0]
        if "recall" in res:
            width = 0.8 / len(names)
            for i, n in enumerate(names):
                vals = [ratio(res["recall"][n][p]["ppl"], res["recall"][baseline][p]["ppl"]) or 0 for p in PARTS]
                ax.bar([j + i * width for j in range(len(PARTS))], vals, width, label=n)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(PARTS))], PARTS)
            ax.axhline(1, color="gray", lw=0.8)
            ax.set_ylabel(f"perplexity / {baseline}'s")
            ax.set_title("recall tokens vs the rest")
        for ax, key, ylabel, title in ((axes[0][1], "copying", "loss 2nd copy / 1st", "copying"),
                                       (axes[1][0], "passkey", "keys fully right", "passkey"),
                                       (axes[1][1], "length", "test perplexity", "context length")):
            r = res.get(key) or {}
            for n in names:
                pts = (r.get("models") or {}).get(n) or []
                if key == "copying":
                    xy = [(p["gap"], p["ratio"]) for p in pts if p]
                elif key == "passkey":
                    xy = [(x["length"], x["accuracy"]) for x in pts if x]
                else:
                    xy = [(ln, x) for ln, x in zip(r.get("lengths", []), pts) if x is not None]
                if xy:
                    ax.plot(*zip(*xy), marker="o", label=n)
            ax.set_xscale("symlog" if key == "copying" else "log", base=2)
            if key == "passkey":
                ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel("gap D (tokens)" if key == "copying" else "context (tokens)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        t = res["translation"]
        for n in names:
            r = t["models"][n]
            axes[0].plot([f"{lo}-{hi}" for lo, hi in t["buckets"]], [b["bleu"] for b in r["by_length"]], marker="o", label=n)
            axes[1].plot([d["sentences_joined"] for d in r["documents"]], [d["bleu"] for d in r["documents"]],
                         marker="o", label=n)
        axes[0].set_xlabel("source length (subword tokens)")
        axes[0].set_title("BLEU by source length")
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("sentences joined into one source")
        axes[1].set_title("documents")
        for ax in axes:
            ax.set_ylabel("BLEU")
    for ax in fig.axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(folder: Path, res: Dict, baseline: str, command: str):
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "results.json", json.dumps(res, indent=1) + "\n")
    plot(res, baseline, folder / "compare.png")
    atomic_write(folder / "report.md", markdown(res, baseline, command))
