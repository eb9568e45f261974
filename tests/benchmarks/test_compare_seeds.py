"""benchmarks/compare_seeds.py: each seed's ratio is to the same seed's control, then mean and half-range."""
from benchmarks import compare_seeds


def results(names_ppl, lengths):
    parts = {p: None for p in compare_seeds.PARTS}
    return {"recall": {n: {p: {"ppl": v} for p in parts} for n, v in names_ppl.items()},
            "length": {"lengths": [128, 256], "models": lengths}}


def test_ratios_pair_each_seed_with_its_own_control():
    first = results({"teacher": 9.0, "control": 10.0, "gate": 11.0}, {"control": [10.0, 20.0], "gate": [12.0, 20.0]})
    others = results({"teacher": 9.0, "control-s2": 20.0, "gate-s2": 26.0}, {"control-s2": [10.0, 10.0], "gate-s2": [10.0, 12.0]})
    seeds = compare_seeds.per_seed([first, others])
    assert set(seeds) == {"control", "gate"}  # the teacher is not an arm
    assert seeds["gate"]["s1"]["recall"]["other"] == 1.1 and seeds["gate"]["s2"]["recall"]["other"] == 1.3
    s = compare_seeds.mean_spread([r["recall"]["other"] for r in seeds["gate"].values()])
    assert abs(s["mean"] - 1.2) < 1e-12 and abs(s["spread"] - 0.1) < 1e-12 and s["n"] == 2
    assert seeds["gate"]["s1"]["length"] == [1.2, 1.0] and seeds["gate"]["s2"]["length"] == [1.0, 1.2]
