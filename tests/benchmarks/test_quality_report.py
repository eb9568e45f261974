"""benchmarks/quality_report.py: the quality benchmark's summary and targets, on hand-made figures
(the pipeline it summarises is the demo's, which tests/demo runs end to end)."""
from benchmarks import quality_report
from fairseq_t2r.demo import teachers  # noqa: E402
from fairseq_t2r.demo.results import by_variant  # noqa: E402


def _collected():
    runs = {"teacher": {"test_ppl": 50.0, "updates": 4000}, "swapped": {"test_ppl": 150.0}}
    figures = {"control": [49.0, 49.2, 49.4], "t2r": [51.0, 51.2, 51.4], "elu": [53.0, 53.1, 53.2],
               "rfa": [51.3, 51.5, 51.7], "transfer": [51.0, 51.1, 51.2]}
    for arm, ppls in figures.items():
        for i, ppl in enumerate(ppls):
            runs[arm if i == 0 else f"{arm}-s{i + 1}"] = {"variant": arm, "test_ppl": ppl, "top1_agreement": 0.9,
                                                           "kl": 0.05}
    recovery = {"metric": "valid ppl", "reference": "control", "target": 52.0, "runs": {
        "t2r": {"updates_to_target": 200}, "t2r-s2": {"updates_to_target": 250}, "t2r-s3": {"updates_to_target": None},
        "transfer": {"updates_to_target": 100}, "transfer-s2": {"updates_to_target": 150},
        "transfer-s3": {"updates_to_target": 300}}}
    return {"lm": {"runs": runs, "by_variant": by_variant(runs, "lm"), "recovery": recovery,
                   "teacher_convergence": {"held": True, "criterion": "c", "improvement": 0.004,
                                           "budget_check": teachers.budget_check([{"updates": 4000, "ppl": 50.0}],
                                                                                 [[{"updates": 300, "ppl": 50.5}]])}}}


def test_summary_states_each_target_with_its_verdict():
    s = quality_report.summarize(_collected())["lm"]
    assert s["bare_swap_cost"] == 2.0  # 150 / 50 - 1: the swap alone triples perplexity
    assert s["arms"]["t2r"]["vs_control"] == round(51.2 / 49.2, 4)
    assert s["arms"]["t2r"]["separated_from_control"] is True  # 51.2 +- 0.2 vs 49.2 +- 0.2
    verdicts = {t["target"].split(" by ")[0].split(" at ")[0]: t["met"] for t in s["targets"]}
    assert verdicts["T2R test perplexity"] is True          # 1.041 <= 1.05
    assert verdicts["T2R top-1 agreement with the teacher"] is True  # 0.90
    assert verdicts["T2R ahead of ELU"] is True             # 51.2 +- 0.2 vs 53.1 +- 0.1
    assert verdicts["T2R ahead of RFA"] is None             # 51.2 +- 0.2 vs 51.5 +- 0.2: within the spreads
    transfer = [t for t in s["targets"] if t["target"].startswith("attention transfer")][0]
    assert transfer["met"] is True  # 3 seeds reach it against 2 (200, 250, never)
    assert quality_report._fewer([None, None], [None, None]) is None  # neither reaches it: nothing to compare
    assert quality_report._fewer([None], [None, 300]) is None        # seed for seed: the first only
    assert quality_report._fewer([300, 100], [200, 250]) is True      # same hits: 400 updates against 450
    assert quality_report._fewer([300, 300], [200, 250]) is False     # 600 against 450
    text = quality_report.markdown({"machine": {"date": "d", "cpu": "c", "cpu_count": 2, "torch": "t"},
                                    "command": "python -m benchmarks.quality", "seconds": 60, "jobs": 2,
                                    "seeds": [1, 2, 3], "settings": {}}, {"lm": s}, _collected())
    assert "| T2R, swap + finetune | 51.200 ± 0.200 (3) |" in text and "-> **not separable**" in text
    assert "): held (the control: validation perplexity 1.0% above the teacher's)." in text  # the budget check
