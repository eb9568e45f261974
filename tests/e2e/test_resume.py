"""Interrupted T2R finetuning: SIGKILL fairseq-train after its first checkpoint, rerun the same
command, and it resumes from checkpoint_last.pt and ends with exactly the model and optimizer
state of a run that was never interrupted. No checkpoint left behind is corrupt."""
import re
import signal
import time

import pytest
import torch
from tool_server import t2r_finetune_args, tools
from utils import load_checkpoint as load

MAX_UPDATE, SAVE_EVERY = 24, 6


def command(lm, save_dir):
    # dropout: resumption must also restore the random state
    return t2r_finetune_args(lm, save_dir, MAX_UPDATE, "--dropout", "0.1", "--save-interval-updates", SAVE_EVERY)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_lm_teacher):
    lm = tiny_lm_teacher
    root = tmp_path_factory.mktemp("resume")
    server = tools()
    reference = server.start("fairseq_cli.train", *command(lm, root / "reference"), cwd=root, threads=1)
    first = server.start("fairseq_cli.train", *command(lm, root / "interrupted"), cwd=root, threads=1)
    # kill right after the first checkpoint is complete (fairseq logs "Saved checkpoint" once
    # checkpoint_last.pt is written), well before the next one
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out, _ = first.read_output()
        if "Saved checkpoint" in out:
            break
        time.sleep(0.005)
    first.kill(signal.SIGKILL)
    killed = first.wait()
    after_kill = {p.name: p for p in (root / "interrupted").glob("*.pt")}
    loadable = {}
    for name, path in after_kill.items():
        try:
            loadable[name] = load(path)["optimizer_history"][-1]["num_updates"]
        except Exception as e:  # reported by the test below
            loadable[name] = repr(e)
    second = server.run("fairseq_cli.train", *command(lm, root / "interrupted"), cwd=root, threads=1)
    return {"root": root, "killed": killed, "loadable": loadable, "second": second,
            "reference": reference.wait(check=True), "lm": lm}


def test_run_was_killed_mid_training_after_a_checkpoint(runs):
    killed = runs["killed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert f"num_updates: {MAX_UPDATE} >= max_update" not in killed.output
    assert "checkpoint_last.pt" in runs["loadable"]


def test_every_checkpoint_left_by_the_killed_run_loads(runs):
    updates = runs["loadable"]
    assert all(isinstance(n, int) for n in updates.values()), updates
    assert updates["checkpoint_last.pt"] >= SAVE_EVERY and updates["checkpoint_last.pt"] % SAVE_EVERY == 0


def test_rerun_resumes_from_checkpoint_last(runs):
    log = runs["second"].output
    resumed_at = runs["loadable"]["checkpoint_last.pt"]
    assert re.search(rf"Loaded checkpoint \S*interrupted/checkpoint_last\.pt \(epoch \d+ @ {resumed_at} updates\)", log), log[-3000:]
    assert "loading pretrained model" not in log  # not restarted from the softmax checkpoint
    assert "T2R swap:" not in log  # the feature maps come from the checkpoint, not a fresh init
    updates = [int(n) for n in re.findall(r"train_inner \|.*num_updates=(\d+)", log)]
    assert updates[0] == resumed_at + 1 and updates[-1] == MAX_UPDATE


def test_resumed_run_ends_where_the_uninterrupted_run_ends(runs):
    """fairseq reseeds every update from (seed, num_updates) and restores the data iterator
    position, so the resumed run repeats the uninterrupted one exactly: same weights (feature
    maps included), same Adam moments, same step count."""
    got = load(runs["root"] / "interrupted" / "checkpoint_last.pt")
    want = load(runs["root"] / "reference" / "checkpoint_last.pt")
    assert got["optimizer_history"][-1]["num_updates"] == want["optimizer_history"][-1]["num_updates"] == MAX_UPDATE
    assert got["model"].keys() == want["model"].keys()
    assert any(".feature_map." in k for k in got["model"])
    for name, tensor in want["model"].items():
        assert torch.allclose(got["model"][name], tensor, rtol=0, atol=1e-6), name
    got_opt, want_opt = got["last_optimizer_state"]["state"], want["last_optimizer_state"]["state"]
    assert got_opt.keys() == want_opt.keys()
    for idx, state in want_opt.items():
        for key, value in state.items():
            if torch.is_tensor(value):
                assert torch.allclose(got_opt[idx][key], value, rtol=0, atol=1e-6), (idx, key)


def test_cut_checkpoint_last_stops_with_what_to_do(runs, tmp_path):
    """fairseq writes checkpoint_N_M.pt atomically but *copies* it to checkpoint_last.pt, so a
    kill during that copy leaves a cut checkpoint_last.pt. The rerun then says so in one line."""
    save_dir = tmp_path / "ckpt"
    save_dir.mkdir()
    blob = (runs["root"] / "interrupted" / "checkpoint_last.pt").read_bytes()
    (save_dir / "checkpoint_last.pt").write_bytes(blob[: len(blob) // 3])
    res = tools().run("fairseq_cli.train", *command(runs["lm"], save_dir), cwd=tmp_path, check=False, threads=1)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = res.error_lines()
    assert len(errors) == 1 and "checkpoint_last.pt is not a readable fairseq checkpoint" in errors[0]
    assert "delete it" in errors[0]
    assert sorted(p.name for p in save_dir.iterdir()) == ["checkpoint_last.pt"]
