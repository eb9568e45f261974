"""t2r-compare end to end on the quick demo's outputs (tests/quick_demo.py, shared with the other
demo tests): the demo's own where-it-loses steps, the command on a teacher and a converted model,
one-line errors for bad input, and a converted model scored past its trained length by the stock
fairseq-eval-lm where the softmax teacher is refused."""
import json
import re
import shutil

from quick_demo import quick_demo
from tool_server import ToolServer
from utils import REPO

from fairseq_t2r.demo import variants

ENV = {"OMP_NUM_THREADS": "1"}


def pipeline(root):
    shared, demo = quick_demo()
    assert demo.returncode == 0, demo.stderr[-3000:]
    # a copy: tests/demo/test_demo.py breaks one of the shared run's checkpoints on purpose
    out = root / "run"
    shutil.copytree(shared, out, symlinks=True)
    lm = out / "lm"
    teacher, t2r, data = lm / "teacher" / "checkpoint_best.pt", lm / "t2r" / "checkpoint_best.pt", lm / "data" / "bin"
    runs = {}
    with ToolServer() as server:
        def run(name, module, *args):
            runs[name] = server.run(module, *map(str, args), cwd=REPO, env=ENV, threads=1, check=False, timeout=900)

        # (the demo's own compare step is the end-to-end run: its report is lm/compare/report.md)
        run("again", "fairseq_t2r.compare", teacher, t2r, "--data", data, "--out", lm / "compare", "--quick")
        run("mixed", "fairseq_t2r.compare", out / "mt" / "teacher" / "checkpoint_best.pt", t2r, "--data", data,
            "--out", root / "mixed")
        run("no_data", "fairseq_t2r.compare", teacher, t2r, "--data", root / "nowhere", "--out", root / "nodata")
        for name, path in (("eval_t2r", t2r), ("eval_teacher", teacher)):
            run(name, "fairseq_cli.eval_lm", data, "--user-dir", f"{REPO}/fairseq_t2r", "--path", path,
                "--gen-subset", "test", "--tokens-per-sample", "1024", "--num-workers", "0")
        # fairseq-interactive past the trained length: 200 new tokens from a 128-position T2R model
        prompt = root / "prompt.txt"
        prompt.write_text("The president said that\n")
        runs["long_output"] = server.run(
            "fairseq_cli.interactive", str(data), "--user-dir", f"{REPO}/fairseq_t2r", "--task", "language_modeling",
            "--path", str(t2r), "--beam", "1", "--min-len", "200", "--max-len-b", "200", "--num-workers", "0",
            cwd=REPO, env=ENV, threads=1, stdin=prompt, check=False, timeout=900)
    return out, root, runs


def test_the_demo_compares_every_arm_and_reports_where_it_loses(pipeline_result):
    out, _, _ = pipeline_result
    for k in ("lm", "mt"):
        res = json.loads((out / k / "compare" / "results.json").read_text())
        runs = json.loads((out / "report" / "results.json").read_text())[k]["runs"]
        arms = [n for n, r in runs.items() if "variant" in r]
        assert list(res["models"]) == ["teacher", *arms]
        assert all(res["models"][n]["converted"] == (n != "control") for n in arms)
    res = json.loads((out / "lm" / "compare" / "results.json").read_text())
    for parts in res["recall"].values():  # the parts split the same tokens for every model
        assert abs(parts["repeated-2"]["share"] + parts["other"]["share"] - 1) < 1e-9
        assert parts["repeated-3"]["tokens"] <= parts["repeated-2"]["tokens"] and parts["rare-2"]["tokens"] <= \
            parts["repeated-2"]["tokens"]
    assert res["recall"]["teacher"]["other"]["top1_agreement"] == 1.0 and res["recall"]["teacher"]["other"]["kl"] == 0
    # every model with sinusoidal positions runs at twice its trained length (--quick's longest)
    assert res["length"]["lengths"] == [128, 256] and all(None not in v for v in res["length"]["models"].values())
    mt = json.loads((out / "mt" / "compare" / "results.json").read_text())["translation"]
    assert all(len(r["by_length"]) == len(mt["buckets"]) and r["documents"] for r in mt["models"].values())
    assert mt["models"]["teacher"]["overall"]["bleu_vs_teacher"] == 100.0
    report = (out / "report" / "report.md").read_text()
    assert report.count("### Where each arm loses") == 2 and "- **t2r** (converted, sinusoidal positions)" in report
    png = (out / "report" / "where_it_loses.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_are_a_grid_at_page_width_with_every_arm_on_every_panel(pipeline_result):
    out, _, _ = pipeline_result
    data = (out / "report" / "curves.png").read_bytes()
    width = int.from_bytes(data[16:20], "big")
    assert width <= 1200  # one row of five panels was 3000 pixels wide
    results = json.loads((out / "report" / "results.json").read_text())
    for name, r in results["mt"]["runs"].items():  # the BLEU panel has a curve for every arm
        if "variant" in r:
            assert any("bleu" in p for p in r["curve"]), name


def test_t2r_compare_writes_its_report_with_a_line_per_step(pipeline_result):
    out, _, _ = pipeline_result
    log = (out / "logs" / "lm__compare.log").read_text()  # the demo's run of t2r-compare on its default arms
    steps = [line for line in log.splitlines() if line.startswith("[t2r-compare] step ")]
    arms = len(variants.DEMO_DEFAULT.split(","))
    assert steps[0] == f"[t2r-compare] step 1 of 6: load the teacher and {arms} converted model(s) ..."
    assert sum(" done in " in line for line in steps) == 6 and "[t2r-compare] wrote " in log
    results = json.loads((out / "lm" / "compare" / "results.json").read_text())
    assert set(results) >= {"recall", "copying", "passkey", "length", "generation"} and "speed" not in results
    copy = results["copying"]["models"]
    assert len(copy["teacher"]) == len(results["copying"]["gaps"]) and copy["t2r"][0]["gap"] == 0
    report = (out / "lm" / "compare" / "report.md").read_text()
    assert "## Recall tokens against the rest" in report and "- **t2r** (converted" in report
    assert (out / "lm" / "compare" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_line_and_overwrites_nothing(pipeline_result):
    out, root, runs = pipeline_result
    before = (out / "lm" / "compare" / "report.md").read_text()
    for name, words in (("again", "report.md exists: pass another --out, or --force"),
                        ("mixed", "the checkpoints mix tasks"),
                        ("no_data", "is not a folder: give the fairseq-preprocess folder")):
        res = runs[name]
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert words in res.error_lines()[0] and len(res.error_lines()) == 1, res.stderr[-2000:]
    assert (out / "lm" / "compare" / "report.md").read_text() == before
    assert not (root / "mixed").exists() and not (root / "nodata").exists()


def test_a_t2r_model_scores_past_its_trained_length_and_the_softmax_teacher_is_refused(pipeline_result):
    _, _, runs = pipeline_result
    t2r, teacher = runs["eval_t2r"], runs["eval_teacher"]
    assert t2r.returncode == 0 and "Perplexity: " in t2r.stdout + t2r.stderr, t2r.stderr[-2000:]
    scored = int(re.search(r"Evaluated ([\d,]+) tokens", t2r.stdout + t2r.stderr).group(1).replace(",", ""))
    assert scored > 1000  # every 1024-token block of the test split, 8x the trained 128
    # the stock teacher keeps fairseq's limit: it skips every block longer than its 128 positions (here all of
    # them, refused in one line)
    assert teacher.returncode == 1 and "evaluated 0 tokens" in teacher.error_lines()[0]


def test_a_t2r_model_generates_past_its_trained_length(pipeline_result):
    res = pipeline_result[2]["long_output"]
    assert res.returncode == 0, res.stderr[-2000:]
    scores = [line for line in res.stdout.splitlines() if line.startswith("P-")]
    assert len(scores) == 1 and len(scores[0].split("\t")[1].split()) > 200  # 200 tokens and the eos

