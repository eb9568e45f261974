"""Where each arm loses, over seeds: t2r-compare's recall split and length curve with their spread.

``benchmarks/quality.py`` runs ``t2r-compare`` on each arm's first seed; a second ``t2r-compare`` over
the other seeds' checkpoints (named ``ARM-sN``, the runs' own names) gives the rest. This reads both
``results.json`` files, takes each seed's ratio to the same seed's control (the control of seed N is
``control-sN``, the first seed's ``control``) and prints mean ± spread (half the range, as the demo's
tables) per arm:

    python -m benchmarks.compare_seeds RUN/lm/compare/results.json RUN/lm/compare_seeds/results.json \
        [--out FILE.json]
"""
import argparse
import json
from collections import defaultdict

from fairseq_t2r.demo.results import mean_spread
from fairseq_t2r.demo.variants import split_run_name

PARTS = ("repeated-2", "repeated-3", "rare-2", "other")


def per_seed(results):
    """{arm: {seed: {"recall": {part: ratio}, "length": [ratio per length]}}} from t2r-compare results."""
    out = defaultdict(dict)
    for r in results:
        recall, length = r.get("recall", {}), r.get("length", {}).get("models", {})
        for name in recall:
            arm, seed = split_run_name(name)
            control = "control" + (f"-{seed}" if seed else "")
            if name == "teacher" or control not in recall:
                continue
            row = {"recall": {p: recall[name][p]["ppl"] / recall[control][p]["ppl"] for p in PARTS if p in recall[name]}}
            if name in length and control in length:
                row["length"] = [a / b for a, b in zip(length[name], length[control])]
            out[arm][seed or "s1"] = row
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="t2r-compare results.json files of one benchmark run")
    p.add_argument("--out", help="write the table as JSON here too")
    a = p.parse_args(argv)
    results = [json.load(open(f)) for f in a.results]
    lengths = next((r["length"]["lengths"] for r in results if "length" in r), [])
    table = {}
    for arm, seeds in per_seed(results).items():
        rows = list(seeds.values())
        table[arm] = {"seeds": sorted(seeds),
                      "recall": {q: mean_spread([r["recall"][q] for r in rows]) for q in PARTS if all(q in r["recall"] for r in rows)},
                      "length": [mean_spread([r["length"][i] for r in rows]) for i in range(len(lengths))]
                      if all("length" in r for r in rows) else []}
    print("ratio to the same seed's control (mean ± half the range over seeds)")
    print("| arm | n | " + " | ".join(PARTS) + " | " + " | ".join(f"ppl at {n}" for n in lengths) + " |")
    print("|---" * (2 + len(PARTS) + len(lengths)) + "|")
    for arm, t in table.items():
        cells = [f"{t['recall'][q]['mean']:.3f} ± {t['recall'][q]['spread']:.3f}" if q in t["recall"] else "" for q in PARTS]
        cells += [f"{s['mean']:.3f} ± {s['spread']:.3f}" for s in t["length"]] or [""] * len(lengths)
        print(f"| {arm} | {len(t['seeds'])} | " + " | ".join(cells) + " |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"lengths": lengths, "arms": table}, f, indent=1)


if __name__ == "__main__":
    main()
