"""The speed table is a function of the results: ``run_all.py --table-only`` on the committed
``benchmarks/results/*.json`` writes the committed ``docs/results/speed.md`` byte for byte (every
target row and every section), and a GPU check's rows render too. Milliseconds: no benchmark runs."""
import json
import os

from utils import REPO

from benchmarks import gpu_check, run_all

RESULTS = os.path.join(REPO, "benchmarks", "results")


def test_table_only_rewrites_the_committed_table(tmp_path, capsys):
    table = tmp_path / "speed.md"
    assert run_all.main(["--table-only", "--out-dir", RESULTS, "--table", str(table)]) == 0
    with open(os.path.join(REPO, "docs", "results", "speed.md")) as f:
        assert table.read_text() == f.read(), "regenerate with: python -m benchmarks.run_all --table-only"


def test_gpu_check_rows():
    equality = {"rows": [{"dtype": "fp32", "length": 8, "out_rel_err": 1e-7, "grad_rel_err": 2e-7, "pass": True},
                         {"dtype": "bf16", "length": 8, "out_rel_err": 1e-2, "grad_rel_err": 3e-2, "pass": False}]}
    with open(os.path.join(RESULTS, "gpu_check_h100.json")) as f:
        gpu = dict(json.load(f), equality=equality)
    assert run_all.targets({"gpu_check": gpu}) == [
        ("GPU", "ours == fla (fp32 tight, bf16/fp16 loose)", "fp32 rel err 1.0e-07", "all pass", "MISS")]
    lines = gpu_check.section(gpu)
    assert "| bf16 | 8 | 1.0e-02 | 3.0e-02 | FAIL |" in lines
    assert sum(line.startswith("| fp16 | 8192 |") for line in lines) == 1  # the timing table
