"""The benchmarks' --quick run: every CPU benchmark on tiny models, in the background (tests/conftest.py)."""
import os
import subprocess
import sys

from utils import REPO


def pipeline(root):
    """The benchmarks' smoke run, started in the background at collection (tests/conftest.py)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick", "--threads", "1",
         "--out-dir", str(root)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )
    return root, res


def test_benchmarks_quick_run(pipeline_result):
    """run_all --quick runs every CPU benchmark on tiny models and writes the table."""
    tmp_path, res = pipeline_result
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in ("lm_generation", "mt_decoding", "training"):
        assert (tmp_path / f"{name}.json").exists(), name
    table = (tmp_path / "speed.md").read_text()
    assert "## Targets" in table and ("PASS" in table or "MISS" in table)
