"""Data-parallel T2R finetuning on CPU: two fairseq-train processes (gloo) train exactly like one
process with --update-freq 2 on the same data: same loss at every update, same final weights.

fairseq shards batches round-robin over ranks (rank r takes batches r, r+2, ...) and sums
gradients over ranks and over --update-freq steps before normalising by the total sample size,
so the two runs see the same batches per update. Dropout is off: its masks are drawn per process.
On CPU each rank is its own process (fairseq only spawns one process per GPU), with
--distributed-no-spawn and an explicit rank, exactly as on several nodes; fairseq's default
--ddp-backend pytorch_ddp passes device_ids and fails on CPU, so the CPU runs use legacy_ddp.
"""
import re
import socket

import pytest
import torch
from tool_server import t2r_finetune_args, tools
from utils import load_checkpoint as load

UPDATES = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(lm, save_dir, *extra):
    return t2r_finetune_args(lm, save_dir, UPDATES, "--dropout", "0", *extra)


def losses(log):
    return {int(n): float(loss) for loss, n in re.findall(r"train_inner \|.* loss=([\d.]+),.* num_updates=(\d+)", log)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_lm_teacher):
    lm = tiny_lm_teacher
    root = tmp_path_factory.mktemp("distributed")
    server = tools()
    init = f"tcp://127.0.0.1:{free_port()}"
    ranks = [
        server.start("fairseq_cli.train", *command(
            lm, root / "two_ranks", "--distributed-world-size", "2", "--distributed-rank", rank,
            "--distributed-init-method", init, "--distributed-backend", "gloo", "--distributed-no-spawn",
            "--ddp-backend", "legacy_ddp"), cwd=root, threads=1)
        for rank in (0, 1)
    ]
    single = server.start("fairseq_cli.train", *command(lm, root / "one_process", "--update-freq", "2"),
                          cwd=root, threads=1)
    return {"root": root, "ranks": [job.wait(timeout=240, check=True) for job in ranks],
            "single": single.wait(timeout=240, check=True)}


def test_both_ranks_trained_in_one_group(runs):
    rank0, rank1 = runs["ranks"]
    assert "distributed init (rank 0)" in rank0.output and "distributed init (rank 1)" in rank1.output
    assert "training on 2 devices" in rank0.output
    assert "loading pretrained model" in rank0.output  # rank 0 reads the softmax checkpoint, then broadcasts
    assert "T2R swap:" in rank0.output
    assert sorted(losses(rank0.output)) == list(range(1, UPDATES + 1))


def test_loss_matches_single_process_with_update_freq_2(runs):
    two, one = losses(runs["ranks"][0].output), losses(runs["single"].output)
    assert sorted(two) == sorted(one) == list(range(1, UPDATES + 1))
    for n in one:
        assert abs(two[n] - one[n]) <= 2e-3, (n, two[n], one[n])  # logged with 3 decimals
    assert one[UPDATES] < one[1]  # it learns


def test_final_weights_match_single_process(runs):
    got = load(runs["root"] / "two_ranks" / "checkpoint_last.pt")
    want = load(runs["root"] / "one_process" / "checkpoint_last.pt")
    assert got["optimizer_history"][-1]["num_updates"] == want["optimizer_history"][-1]["num_updates"] == UPDATES
    assert any(".feature_map." in k for k in want["model"])
    for name, tensor in want["model"].items():
        assert torch.allclose(got["model"][name], tensor, rtol=1e-4, atol=1e-6), name
    # only rank 0 writes checkpoints, and they carry the plugin marker like any T2R checkpoint
    assert got["model"]._metadata[""].get("fairseq_t2r") is not None
