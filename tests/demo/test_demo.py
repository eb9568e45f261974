"""t2r-demo: the quick run end to end on the bundled real-text slices, reuse of finished steps,
refusal to mix settings, a failing step named with its log, bad input, and the runner alone."""
import json
import math

import pytest
import torch
from quick_demo import ENV, QUICK, demo, quick_demo
from tool_server import ToolServer, tools
from utils import DATA, REPO, lm_args

from fairseq_t2r import checkpoint
from fairseq_t2r.demo import cli, tables, takeaway, teachers, variants
from fairseq_t2r.demo import runner as runner_module
from fairseq_t2r.demo.results import by_variant, separated
from fairseq_t2r.demo.runner import Runner, Step
from fairseq_t2r.demo.teachers import flags_from_checkpoint
from fairseq_t2r.errors import T2RUserError

ARMS = variants.DEMO_DEFAULT.split(",")
AGAIN_ARMS = ["t2r", "rfa", "transfer"]  # the second run's
RUNS = ["teacher", "swapped", *ARMS]
SIGINT_DEFAULT = f"{REPO}/tests/sigint_default.py"  # Ctrl-C as at a terminal, whatever pytest inherited


def pipeline(root):
    """The quick demo (tests/quick_demo.py: run once per session, its outputs shared with
    tests/test_docs.py), then a second run in another folder with the same teacher settings (the
    teacher cache), with the arms the default leaves out (RFA, attention transfer's two stages):
    started in the background at collection (tests/conftest.py)."""
    out, res = quick_demo()
    again = root / "again"
    with ToolServer() as server:  # the main one (tools()) answers the in-process tests meanwhile
        return out, res, again, demo(*QUICK, "--tasks", "lm", "--variants", ",".join(AGAIN_ARMS), "--out", str(again),
                                     server=server)


@pytest.fixture(scope="module")
def quick(pipeline_result):
    out, res, _, _ = pipeline_result
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
    for name in ("t2r", "elu", "gate"):
        assert lm[name]["test_ppl"] < lm["swapped"]["test_ppl"], name
    # every training reports its validation curve up to its last update
    for runs in (lm, mt):
        for name in ("teacher", *ARMS):
            assert runs[name]["curve"][-1]["updates"] == runs[name]["updates"], name
    for k in ("lm", "mt"):
        speed = results[k]["speed"]
        t2r = [r["state_bytes"] for r in speed["t2r"]]
        teacher = [r["state_bytes"] for r in speed["teacher"]]
        if k == "lm":
            assert len(set(t2r)) == 1, "the RNN state must not grow with the context"
        else:  # softmax cross-attention (the default) caches the source, as long as the context here; the
            # decoder's own state is constant: less than the teacher's source + target caches
            assert t2r[-1] < teacher[-1] / 2 + t2r[0], "the decoder state must not grow with the output"
        assert teacher[-1] > teacher[0] > 0 and teacher[-1] > t2r[-1]
        assert results[k]["finetune_cost"]["updates_fraction"] == 0.5
    report = (out / "report" / "report.md").read_text()
    assert "| T2R, swap + finetune |" in report and "fairseq-train " in report and "fairseq-generate " in report
    assert "| softmax, same budget (control) |" in report and "**The conversion's cost**" in report
    for png in ("curves.png", "speed.png"):
        data = (out / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_quick_demo_shows_its_position_and_ends_with_a_takeaway(quick):
    out, res = quick
    lines = res.stdout.splitlines()
    starts = [line for line in lines if " -- step " in line]
    total = len(list((out / "steps").iterdir()))
    assert f" -- step 1 of {total}, " in starts[0] and starts[0].endswith(" elapsed")  # nothing finished: no estimate
    assert f"step {total} of {total}, " in starts[-1] and "left" in starts[-1]
    done = [line for line in lines if " done in " in line]
    assert all(" elapsed" in line for line in done) and "about 0:00 left" in done[-1]
    lm, mt = lines[-4], lines[-3]
    # the best converted arm first when it is not T2R, then the paper's T2R
    assert lm.startswith(("LM: converting to T2R and finetuning", "LM: the best conversion of this run, "))
    assert "converting to T2R and finetuning for 30 updates gives test perplexity " in lm
    assert "for the softmax control" in lm and ("x faster at context 256" in lm or "x slower at context 256" in lm)
    assert mt.startswith("MT: ") and "converting to T2R" in mt and "test BLEU" in mt and "against the teacher's own translations" in mt
    # the quick teachers (60 updates) are far from their plateau, and the takeaway says so
    assert all(line.endswith("so these figures flatter the conversion.") for line in (lm, mt))
    assert lines[-2].startswith("(--quick:")
    report = (out / "report" / "report.md").read_text()
    assert f"**{lm}**" in report and f"**{mt}**" in report
    assert not any(n in res.stderr + res.stdout for n in ("ConfigStore schema", "hydra.experimental"))


def test_ctrl_c_stops_the_demo_with_one_line(tmp_path):
    """Ctrl-C while a step runs: one line, exit status 130, the running step ended (and waited for),
    no marker for it; what finished stays for the rerun (test_rerun_reuses_every_finished_step)."""
    import signal
    import time

    job = tools().start(None, "fairseq_t2r.demo", *QUICK, "--tasks", "lm", "--out", tmp_path / "run",
                        script=SIGINT_DEFAULT, cwd=REPO, env=ENV)
    log = tmp_path / "run" / "logs" / "lm__data.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size):  # the step's child runs (its banner is written)
        assert time.monotonic() < deadline, job.read_output()
        time.sleep(0.05)
    # (a Ctrl-C that lands while the demo forks a step is lost in os.fork's handlers: Python prints
    # "Exception ignored"; at a terminal the step gets it too, fails, and the demo stops naming it)
    time.sleep(0.2)
    job.kill(signal.SIGINT)
    res = job.wait(timeout=60)
    assert res.returncode == 130, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == (
        "t2r-demo: interrupted; finished steps are kept and an interrupted training goes on from its last "
        "checkpoint: rerun the same command to resume")
    assert list((tmp_path / "run" / "steps").iterdir()) == []


def test_takeaway_says_what_the_figures_say():
    task = {"runs": {"t2r": {"updates": 150, "test_ppl": 44.0, "top1_agreement": 0.912}},
            "headline": {"t2r": 44.0, "control": 40.0, "t2r_vs_control": 1.1},
            "teacher_convergence": {"held": True},
            "speed": {"teacher": [{"context": 2048, "ms_per_token": 9.0, "state_bytes": 2 * 2**20}],
                      "t2r": [{"context": 2048, "ms_per_token": 3.0, "state_bytes": 2**19}]}}
    assert takeaway.sentence("lm", task) == (
        "LM: converting to T2R and finetuning for 150 updates gives test perplexity 44.0 against 40.0 for the "
        "softmax control (+10.0%), agreeing with the teacher's next-token choice 91% of the time (the control: "
        "the teacher trained for the same 150 updates); it decodes a token 3.0x faster at context 2048 with a "
        "state of 0.50 MiB that does not grow (the teacher's: 2.00 MiB).")
    # a better arm than T2R leads, then the paper's T2R
    task["headline"]["best"] = {"run": "gate", "variant": "gate", "test_ppl": 41.0, "vs_control": 1.025}
    assert takeaway.sentence("lm", task).startswith(
        "LM: the best conversion of this run, T2R + forget gate from the key, swap + finetune (`gate`), gives test "
        "perplexity 41.0 (+2.5% against the control); the paper's recipe: converting to T2R and finetuning for 150 "
        "updates gives test perplexity 44.0 against 40.0")
    del task["headline"]["best"]
    del task["speed"]
    task["teacher_convergence"]["held"] = False
    assert takeaway.sentence("lm", task).endswith(
        "the same 150 updates); but the teacher is not shown converged, so these figures flatter the conversion.")
    flat = [{"updates": 30, "ppl": 40.0}]
    task["teacher_convergence"]["budget_check"] = teachers.budget_check(flat, [flat])  # the budget bought nothing
    assert takeaway.sentence("lm", task).endswith("the same 150 updates).")
    task["headline"] = {"t2r": 44.0, "control": None}  # no control arm: no claim about the conversion's cost
    assert takeaway.sentence("lm", task) is None and takeaway.sentences({"lm": task}, "quick") == []


def test_quick_demo_compares_with_the_control_and_measures_faithfulness(quick):
    """The control is the softmax teacher finetuned like the others; every converted model's test
    figures come with its faithfulness to the teacher; the unconverged quick teacher is flagged."""
    out, _ = quick
    results = json.loads((out / "report" / "results.json").read_text())
    for kind, arch in (("lm", "transformer_lm"), ("mt", "transformer")):
        state = torch.load(out / kind / "control" / "checkpoint_best.pt", map_location="cpu", weights_only=False)
        assert checkpoint.model_config(state)[1] == arch  # softmax, the teacher's architecture
        runs = results[kind]["runs"]
        for name in ["swapped", *ARMS]:
            if kind == "lm":
                assert 0 <= runs[name]["top1_agreement"] <= 1 and runs[name]["kl"] >= 0, name
            else:
                assert 0 <= runs[name]["bleu_vs_teacher"] <= 100, name
        conv = results[kind]["teacher_convergence"]
        assert conv["held"] is False and conv["improvement"] >= teachers.TOLERANCE
        assert conv["budget_check"]["held"] is not None  # the control ran, so the budget check was made
        key = "test_ppl" if kind == "lm" else "bleu"
        assert results[kind]["headline"]["control"] == runs["control"][key]
    report = (out / "report" / "report.md").read_text()
    assert report.count("**Warning: this teacher is not shown to be converged.**") == 2


def test_a_second_run_reuses_the_cached_teacher(quick, pipeline_result):
    """Same data and teacher settings in another folder: the teacher is copied from the cache, not
    trained, and the run says so; the run folder holds it as if trained there."""
    out, _ = quick
    _, _, again, res = pipeline_result
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[lm/teacher] reuse the cached softmax teacher" in res.stdout and "train the softmax teacher" not in res.stdout
    copied = again / "lm" / "teacher" / "checkpoint_best.pt"
    assert copied.read_bytes() == (out / "lm" / "teacher" / "checkpoint_best.pt").read_bytes()
    report = (again / "report" / "report.md").read_text()
    assert "Teacher: cached (" in report and "reused, 60 updates" in report


def test_the_arms_the_default_leaves_out_train_and_score(pipeline_result):
    """RFA and attention transfer (--variants): every one trained and scored; transfer's curve begins
    after its stage one."""
    _, _, again, res = pipeline_result
    assert res.returncode == 0, res.stderr[-3000:]
    runs = json.loads((again / "report" / "results.json").read_text())["lm"]["runs"]
    assert set(runs) == {"teacher", "swapped", *AGAIN_ARMS}
    for name in AGAIN_ARMS:
        assert runs[name]["test_ppl"] < runs["swapped"]["test_ppl"], name
        assert runs[name]["curve"][-1]["updates"] == runs[name]["updates"], name
    assert runs["transfer"]["curve"][0]["updates"] > runs["transfer"]["transfer_updates"]


def test_the_plateau_criterion_on_hand_made_curves():
    flat = [{"updates": u, "ppl": p} for u, p in ((100, 50.0), (200, 40.0), (300, 39.9), (400, 39.8))]
    c = teachers.converged(flat)  # best by update 300: 39.9; after: 39.8, 0.25% better
    assert c["held"] is True and c["best_before_last_share"] == 39.9 and c["improvement"] == round(0.1 / 39.9, 4)
    falling = flat[:3] + [{"updates": 400, "ppl": 30.0}]
    assert teachers.converged(falling)["held"] is False
    assert teachers.converged([{"updates": 100, "ppl": 9.0}])["held"] is False  # nothing before the last quarter
    assert teachers.converged([])["held"] is None


def test_the_budget_check_on_hand_made_curves():
    def curve(*ppls):
        return [{"updates": 100 * (i + 1), "ppl": p} for i, p in enumerate(ppls)]
    teacher = curve(120.0, 100.0)
    lm = teachers.budget_check(teacher, [curve(101.0, 99.6), curve(99.4)])  # the controls' best: 99.5 on average
    assert lm["held"] is True and lm["gain"] == 0.005 and lm["control"] == 99.5
    assert teachers.budget_gain_words(lm) == "validation perplexity 0.5% below the teacher's"
    worse = teachers.budget_check(teacher, [curve(101.0)])
    assert worse["held"] is True and teachers.budget_gain_words(worse) == "validation perplexity 1.0% above the teacher's"
    assert teachers.budget_check(teacher, [curve(98.0)])["held"] is False  # 2% better: the teacher was still learning
    assert teachers.budget_check([], [curve(98.0)])["held"] is None  # a user's teacher without its log
    assert teachers.budget_check(teacher, [])["held"] is None        # no control arm
    # either check holding makes the comparison sound; neither, or only missing figures, does not
    assert teachers.comparison_sound({"held": False, "budget_check": lm})
    assert teachers.comparison_sound({"held": True})
    assert not teachers.comparison_sound({"held": False, "budget_check": {"held": None}})
    task = {"teacher_convergence": {"held": False, "criterion": "c", "improvement": 0.03, "budget_check": lm},
            "runs": {"teacher": {"updates": 5000}}}
    text = "\n".join(tables.teacher_lines(task))
    assert "Budget check (" in text and "held (the control: validation perplexity 0.5% below" in text
    assert "not flattered by extra training" in text and "Warning" not in text
    task["teacher_convergence"]["budget_check"] = teachers.budget_check(curve(100.0), [curve(98.0)])
    assert "**Warning: this teacher is not shown to be converged.**" in "\n".join(tables.teacher_lines(task))
    task["teacher_convergence"]["held"] = True  # at its plateau, but the restart gains 2%: said, without the warning
    text = "\n".join(tables.teacher_lines(task))
    assert "judge them against the control" in text and "Warning" not in text
    task["teacher_convergence"]["budget_check"] = lm
    assert "judge them against the control" not in "\n".join(tables.teacher_lines(task))


def test_a_cached_teacher_of_other_data_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRSEQ_T2R_CACHE", str(tmp_path / "cache"))
    (tmp_path / "ckpt.pt").write_bytes(b"weights")
    (tmp_path / "train.log").write_text("log\n")
    (tmp_path / "dict.txt").write_text("a 1\n")
    key = teachers.cache_key(["--text", str(tmp_path / "dict.txt")], ["--arch", "transformer_lm"], [])
    teachers.store(key, str(tmp_path / "ckpt.pt"), tmp_path / "train.log", tmp_path / "dict.txt", "fairseq-train X")
    assert teachers.cached(key) and not list((tmp_path / "cache" / "teachers").glob("*.tmp-*"))
    (tmp_path / "other.txt").write_text("b 1\n")
    with pytest.raises(T2RUserError, match="trained on another dictionary") as e:
        teachers.reuse(teachers.cached(key), tmp_path / "run", tmp_path / "other.txt")
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()
    # the key follows the contents of the files the data step reads, not their names
    (tmp_path / "dict.txt").write_text("a 2\n")
    assert teachers.cache_key(["--text", str(tmp_path / "dict.txt")], ["--arch", "transformer_lm"], []) != key


def test_variants_are_named_once_and_checked():
    assert [v.name for v in variants.parse("cross-linear,t2r,control", "lm")] == ["control", "t2r"]  # table order
    assert [v.name for v in variants.parse("cross-linear", "mt")] == ["cross-linear"]
    with pytest.raises(T2RUserError, match="--variants 't2r,softmax': unknown softmax; choose from control"):
        variants.parse("t2r,softmax", "lm")
    for name in variants.VARIANTS:
        for seed in (1, 3):
            assert variants.split_run_name(variants.run_name(name, seed, 1)) == (name, "" if seed == 1 else "s3")


def test_mean_and_spread_over_seeds():
    runs = {"teacher": {"test_ppl": 9.0}, "t2r": {"variant": "t2r", "test_ppl": 10.0},
            "t2r-s2": {"variant": "t2r", "test_ppl": 12.0}, "elu": {"variant": "elu", "test_ppl": 15.0},
            "elu-s2": {"variant": "elu", "test_ppl": 15.5}, "rfa": {"variant": "rfa", "test_ppl": 11.5}}
    arms = by_variant(runs, "lm")
    assert arms["t2r"]["test_ppl"] == {"mean": 11.0, "spread": 1.0, "n": 2, "values": [10.0, 12.0]}
    assert separated(arms["t2r"]["test_ppl"], arms["elu"]["test_ppl"]) is True   # 4.25 > 1.25
    assert separated(arms["t2r"]["test_ppl"], arms["rfa"]["test_ppl"]) is None   # one seed: no ranking
    close = {"mean": 11.5, "spread": 0.5, "n": 2}
    assert separated(arms["t2r"]["test_ppl"], close) is False


def test_progress_estimates_the_time_left_from_this_runs_pace(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: now[0])
    steps = [Step("data", "d", func=print), Step("train", "t", "fairseq_cli.train", ["--max-update", "30"]),
             Step("eval", "e", func=print)]
    p = runner_module.Progress(total=3, costs={s.name: runner_module.cost(s) for s in steps})
    p.reused("data")
    assert p.start() == 2 and p.times() == "0:00 elapsed"
    now[0] += 90
    p.finished("train")  # 30 cost units in 90 s: the evaluation's 10 take about 30 s
    assert p.times() == "1:30 elapsed, about 0:30 left"


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


def test_a_users_teacher_is_checked_with_the_training_log_beside_it(tmp_path):
    """--lm-teacher: a fairseq-train log (json format) beside the checkpoint gives its curve, judged by
    the same plateau criterion; no log: not checked, and the report says so."""
    (tmp_path / "checkpoint_best.pt").write_bytes(b"x")
    assert teachers.training_log(str(tmp_path / "checkpoint_best.pt")) is None
    lines = [f'2026-01-01 00:00:00 | INFO | valid | {{"epoch": 1, "valid_loss": "5.0", "valid_ppl": "{p}", '
             f'"valid_num_updates": "{u}"}}' for u, p in ((100, 80.0), (200, 60.0), (300, 59.9), (400, 59.8))]
    (tmp_path / "notes.log").write_text("no validations here\n")
    (tmp_path / "train.log").write_text("\n".join(["| INFO | train | begin"] + lines) + "\n")
    log = teachers.training_log(str(tmp_path / "checkpoint_best.pt"))
    assert log == tmp_path / "train.log"
    from fairseq_t2r.demo import measure

    assert teachers.converged(measure.valid_curve(log))["held"] is True


def test_teachers_anneal_to_zero_at_their_cap_and_finetuning_keeps_inverse_sqrt(tmp_path):
    """A teacher's (and scratch's) rate decays linearly to 0 at its cap, a complete schedule so the
    teacher ends at its plateau; the finetuning arms keep inverse_sqrt with their own warmup."""
    from fairseq_t2r.demo import presets
    from fairseq_t2r.demo.plan import TaskPlan

    preset = presets.PRESETS["default"]
    plan = TaskPlan("lm", tmp_path, preset, f"{REPO}/fairseq_t2r", variants="control,t2r,scratch",
                    teacher_cache=False)
    steps = {s.name: s.args for s in plan.steps() if s.module == "fairseq_cli.train"}

    def flag(args, name):
        return args[args.index(name) + 1]

    teacher, scratch = steps["lm/teacher"], steps["lm/scratch"]
    assert flag(teacher, "--lr-scheduler") == "polynomial_decay" and flag(teacher, "--end-learning-rate") == "0"
    assert flag(teacher, "--total-num-update") == flag(teacher, "--max-update") == str(preset.lm_teacher_updates)
    assert flag(teacher, "--warmup-updates") == str(presets.TEACHER_WARMUP) and "--patience" not in teacher
    assert flag(scratch, "--total-num-update") == str(preset.lm_teacher_updates + preset.ft_updates)
    mt_teacher = TaskPlan("mt", tmp_path, preset, f"{REPO}/fairseq_t2r", teacher_cache=False)._teacher_flags()
    assert flag(mt_teacher, "--max-update") == str(preset.mt_teacher_updates)  # each task its own schedule
    for arm in ("control", "t2r"):
        assert flag(steps[f"lm/{arm}"], "--lr-scheduler") == "inverse_sqrt"
        assert "--total-num-update" not in steps[f"lm/{arm}"]


def test_hybrid_rule_arms_choose_the_layer_with_t2r_convert(tmp_path):
    """hybrid-RULE: t2r-convert --t2r-keep-softmax 1 --t2r-select RULE with attention transfer, then
    finetuning from its checkpoint (the layers are the checkpoint's) for the rest of the budget."""
    from fairseq_t2r.demo import presets
    from fairseq_t2r.demo.plan import TaskPlan

    preset = presets.PRESETS["quick"]
    plan = TaskPlan("lm", tmp_path, preset, f"{REPO}/fairseq_t2r", variants="control,hybrid-kl,hybrid-even",
                    teacher_cache=False)
    steps = {s.name: s for s in plan.steps()}
    for rule in ("kl", "even"):
        select, finetune = steps[f"lm/hybrid-{rule}_selected"], steps[f"lm/hybrid-{rule}"]
        args = select.args
        assert select.module == "fairseq_t2r.convert" and args[:2] == [plan.teacher_path, plan.checkpoint(select.name[3:])]
        for flag, value in (("--t2r-keep-softmax", "1"), ("--t2r-select", rule),
                            ("--transfer-updates", str(preset.transfer_updates)), ("--transfer-data", str(plan.bin))):
            assert args[args.index(flag) + 1] == value
        ft = finetune.args
        assert ft[ft.index("--finetune-from-model") + 1] == plan.checkpoint(select.name[3:])
        assert "--t2r-layers" not in ft and finetune.deps == [select.name]
        assert ft[ft.index("--max-update") + 1] == str(preset.ft_updates - preset.transfer_updates)


def test_window_arms_pass_the_window_to_the_swap(tmp_path):
    """window: the gate from the key with a 64-token window; window-only: the window alone."""
    from fairseq_t2r.demo import presets
    from fairseq_t2r.demo.plan import TaskPlan

    plan = TaskPlan("lm", tmp_path, presets.PRESETS["quick"], f"{REPO}/fairseq_t2r", variants="window,window-only,window-dropout",
                    teacher_cache=False)
    steps = {s.name: s.args for s in plan.steps()}
    flag = lambda args, name: args[args.index(name) + 1]  # noqa: E731
    assert flag(steps["lm/window"], "--t2r-window") == flag(steps["lm/window-only"], "--t2r-window") == "64"
    assert flag(steps["lm/window"], "--t2r-state") == "gate" and "--t2r-window-branch" not in steps["lm/window"]
    assert flag(steps["lm/window-only"], "--t2r-window-branch") == "window"
    assert flag(steps["lm/window-dropout"], "--t2r-window-dropout") == "0.5"
    assert flag(steps["lm/window-dropout"], "--t2r-window") == "64"
