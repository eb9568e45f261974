"""t2r-demo: the quick run end to end on the bundled real-text slices, reuse of finished steps,
refusal to mix settings, a failing step named with its log, bad input, and the runner alone."""
import json
import math

import pytest
import torch
from quick_demo import QUICK, demo, quick_demo
from utils import DATA, lm_args

from fairseq_t2r.demo import cli
from fairseq_t2r.demo.plan import VARIANTS, flags_from_checkpoint
from fairseq_t2r.demo.runner import Runner, Step
from fairseq_t2r.errors import T2RUserError

RUNS = ["teacher", "swapped", *VARIANTS]


def pipeline(root):
    """The quick demo (tests/quick_demo.py: run once per session, its outputs shared with
    tests/test_docs.py), started in the background at collection (tests/conftest.py)."""
    return quick_demo()


@pytest.fixture(scope="module")
def quick(pipeline_result):
    out, res = pipeline_result
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return out, res


def test_quick_demo_writes_the_report(quick):
    out, _ = quick
    results = json.loads((out / "report" / "results.json").read_text())
    lm, mt = results["lm"]["runs"], results["mt"]["runs"]
    assert set(lm) == set(mt) == set(RUNS)
    for name in RUNS:
        assert math.isfinite(lm[name]["test_ppl"]) and lm[name]["test_ppl"] > 1
        assert 0 <= mt[name]["bleu"] <= 100 and 0 <= mt[name]["chrf"] <= 100
        assert mt[name]["sentences"] == results["mt"]["data"]["splits"]["test"]["pairs"]
    # finetuning does something: every finetuned LM is better than the untrained swap
    for name in ("t2r", "elu", "rfa", "transfer"):
        assert lm[name]["test_ppl"] < lm["swapped"]["test_ppl"], name
    # every training reports its validation curve up to its last update
    for runs in (lm, mt):
        for name in ("teacher", "t2r", "elu", "rfa", "transfer", "scratch"):
            assert runs[name]["curve"][-1]["updates"] == runs[name]["updates"], name
    assert lm["transfer"]["curve"][0]["updates"] > lm["transfer"]["transfer_updates"]
    for k in ("lm", "mt"):
        speed = results[k]["speed"]
        t2r = [r["state_bytes"] for r in speed["t2r"]]
        teacher = [r["state_bytes"] for r in speed["teacher"]]
        assert len(set(t2r)) == 1, "the RNN state must not grow with the context"
        assert teacher[-1] > teacher[0] > 0 and teacher[-1] > t2r[-1]
        assert results[k]["finetune_cost"]["updates_fraction"] == 0.5
    report = (out / "report" / "report.md").read_text()
    assert "| T2R, swap + finetune |" in report and "fairseq-train " in report and "fairseq-generate " in report
    for png in ("curves.png", "speed.png"):
        data = (out / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_rerun_reuses_every_finished_step(quick):
    out, first = quick
    before = (out / "report" / "results.json").read_text()
    res = demo(*QUICK, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    reused = [line for line in res.stdout.splitlines() if "finished earlier" in line]
    ran = [line for line in res.stdout.splitlines() if " done in " in line]
    assert len(reused) == first.stdout.count(" done in ") and not ran
    after = json.loads((out / "report" / "results.json").read_text())
    assert after["lm"]["runs"] == json.loads(before)["lm"]["runs"]


def test_other_settings_in_the_same_folder_are_refused(quick):
    out, _ = quick
    before = (out / "report" / "results.json").read_bytes()
    res = demo(*QUICK, "--out", str(out), "--seed", "2")
    assert res.returncode == 1
    # one line (beside the INFO line fairseq's text_to_speech task logs when fairseq is imported)
    assert [line for line in res.stderr.splitlines() if not line.startswith("INFO:")] == [res.stderr.strip().splitlines()[-1]]
    assert "finished with other settings" in res.stderr and "--out" in res.stderr
    assert (out / "report" / "results.json").read_bytes() == before


def test_teacher_flags_rebuild_the_teacher(quick):
    """--lm-teacher/--mt-teacher: the architecture flags read off a checkpoint build a model
    that loads the checkpoint strictly."""
    from fairseq import options, tasks

    out, _ = quick
    for kind, task in (("lm", ["--task", "language_modeling"]), ("mt", ["--task", "translation", "-s", "en", "-t", "de"])):
        ckpt = out / kind / "teacher" / "checkpoint_best.pt"
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, [str(out / kind / "data" / "bin"), *task, *flags_from_checkpoint(str(ckpt))])
        model = tasks.setup_task(args).build_model(args)
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
        model.load_state_dict(state, strict=True)


def test_a_failing_step_is_named_and_earlier_results_stay(quick):
    out, _ = quick  # runs last: it breaks one result of the shared run
    marker = out / "steps" / "lm__eval_t2r.json"
    marker.unlink()
    (out / "lm" / "t2r" / "checkpoint_best.pt").write_bytes(b"not a checkpoint")
    kept = sorted(p.name for p in (out / "steps").iterdir())
    res = demo(*QUICK, "--out", str(out))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("fairseq_t2r: error: step 'lm/eval_t2r'") and "lm__eval_t2r.log" in last
    assert "rerun" in last
    assert sorted(p.name for p in (out / "steps").iterdir()) == kept


@pytest.mark.parametrize("argv, message", [
    (["--lm-text", "/nonexistent.txt"], "--lm-text /nonexistent.txt: no such file"),
    (["--mt-src", f"{DATA}/mt/libreoffice.en"], "pass both --mt-src FILE and --mt-tgt FILE"),
    (["--tasks", "lm,speech"], "--tasks 'lm,speech'"),
])
def test_bad_input_is_one_line(argv, message, tmp_path):
    with pytest.raises(T2RUserError) as e:
        cli.main([*argv, "--out", str(tmp_path / "out")])
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint_as_teacher(tmp_path):
    bad = tmp_path / "teacher.pt"
    bad.write_text("hello")
    with pytest.raises(T2RUserError, match="not a readable fairseq checkpoint"):
        flags_from_checkpoint(str(bad))


def test_a_teacher_no_command_line_rebuilds_is_refused(tmp_path):
    """transformer_lm_wiki103 turns no_decoder_final_norm on, and no option turns it off: a teacher
    of that arch with a final norm stops the plan with one line naming the setting."""
    path = tmp_path / "teacher.pt"
    torch.save({"args": lm_args(arch="transformer_lm_wiki103"), "model": {}}, path)
    with pytest.raises(T2RUserError) as e:
        flags_from_checkpoint(str(path))
    message = e.value.code
    assert "\n" not in message and "no_decoder_final_norm=False where fairseq-train --arch transformer_lm_wiki103 gives True" in message


def test_runner_resumes_after_a_failure(tmp_path):
    """A failed step stops the run with its name; the rerun reuses what finished and runs the rest."""
    logs = []
    flag = tmp_path / "fixed"

    def flaky():
        if not flag.exists():
            raise RuntimeError("broken input")

    steps = [Step("a", "first", func=lambda: (tmp_path / "a.txt").write_text("a"), describe="a"),
             Step("b", "second", func=flaky, deps=["a"], describe="b"),
             Step("c", "third", func=lambda: None, deps=["b"], describe="c")]
    runner = Runner(tmp_path / "run", jobs=2, log=logs.append)
    with pytest.raises(T2RUserError, match="step 'b' .*RuntimeError: broken input"):
        runner.run(steps)
    assert (tmp_path / "a.txt").exists() and runner.finished(steps[0]) and not runner.finished(steps[2])
    flag.write_text("")
    logs.clear()
    runner.run(steps)
    assert logs[0].startswith("[a] finished earlier") and any(line.startswith("[c] done") for line in logs)
