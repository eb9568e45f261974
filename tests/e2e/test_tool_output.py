"""What the tools print around the work: Ctrl-C ends t2r-convert (inside attention transfer's
fairseq-train) and the prep tools with one line and exit status 130, leaving nothing partial;
fairseq's known-harmless warnings are hidden from a fairseq tool run with --user-dir unless
FAIRSEQ_T2R_VERBOSE=1. (The demo's Ctrl-C: tests/demo/test_demo.py.)"""
import os
import signal
import time
from pathlib import Path

from tool_server import USER_DIR, tools
from utils import DATA

SIGINT_DEFAULT = Path(__file__).resolve().parents[1] / "sigint_default.py"
HYDRA_NOTICES = ("ConfigStore schema", "hydra.experimental", "version_base", "strict flag")


def interrupt_when(job, ready, timeout=120):
    """SIGINT ``job`` once ``ready(stdout, stderr)`` holds; returns its result."""
    deadline = time.monotonic() + timeout
    while not ready(*job.read_output()):
        assert time.monotonic() < deadline, job.read_output()
        time.sleep(0.05)
    job.kill(signal.SIGINT)
    return job.wait(timeout=60)


def assert_one_interrupt_line(res, tool, what):
    assert res.returncode == 130, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{tool}: interrupted; ") and what in last, last


def test_ctrl_c_in_attention_transfer_is_one_line_and_leaves_nothing(tmp_path, tiny_lm_teacher):
    lm = tiny_lm_teacher
    out = tmp_path / "t2r.pt"
    job = tools().start(None, "fairseq_t2r.convert", lm["teacher"], out, "--transfer-data", lm["data"],
                        "--transfer-updates", "100000", script=SIGINT_DEFAULT, cwd=tmp_path, threads=1)
    res = interrupt_when(job, lambda o, e: "begin training epoch" in o)
    assert_one_interrupt_line(res, "t2r-convert", "rerun the same command to start over")
    assert list(tmp_path.iterdir()) == []  # no output, no temp file, no scratch folder
    assert not any(n in res.stderr for n in HYDRA_NOTICES), res.stderr[-3000:]


def test_ctrl_c_in_data_preparation_is_one_line(tmp_path):
    job = tools().start(None, "fairseq_t2r.prep.lm", "--text", os.path.join(DATA, "lm", "english.txt"),
                        "--out", tmp_path / "data", "--bpe-merges", "200", "--workers", "1",
                        script=SIGINT_DEFAULT, cwd=tmp_path, threads=1)
    res = interrupt_when(job, lambda o, e: "tokenize" in o + e)
    assert_one_interrupt_line(res, "t2r-prepare-lm", "rerun the same command")
    assert not (tmp_path / "data" / "stats.json").exists()


def test_fairseq_tools_with_the_plugin_hide_harmless_warnings(tiny_lm_teacher):
    lm = tiny_lm_teacher
    args = [lm["data"], "--user-dir", USER_DIR, "--path", lm["teacher"], "--tokens-per-sample", "32",
            "--max-tokens", "256"]
    quiet = tools().start("fairseq_cli.eval_lm", *args, threads=1)
    verbose = tools().start("fairseq_cli.eval_lm", *args, env={"FAIRSEQ_T2R_VERBOSE": "1"}, threads=1)
    quiet, verbose = quiet.wait(check=True), verbose.wait(check=True)
    assert all(n in verbose.stderr for n in HYDRA_NOTICES), verbose.stderr
    assert not any(n in quiet.stderr for n in HYDRA_NOTICES), quiet.stderr
    assert "Perplexity" in quiet.stdout  # only the notices went: the tool's own log is all there
