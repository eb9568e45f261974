"""The forked tool runs' memory setting (fairseq_t2r/toolrun.py keep_freed_memory)."""
import ctypes
import os
import resource
import subprocess
import sys

import pytest

from fairseq_t2r import toolrun

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WARMUP, STEPS = 10, 40


def faults_of_training_steps():
    """Page faults of STEPS training steps of a tiny LM shaped like the demo's (8 x 128 tokens, 3120 words:
    12 MiB of logits), after WARMUP steps, in which a forked child also copies the parent's pages it
    reuses (copy-on-write faults, as many as the parent's heap has free space)."""
    import torch

    torch.manual_seed(0)
    emb = torch.nn.Embedding(3120, 128)
    ffn = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128))
    opt = torch.optim.Adam([*emb.parameters(), *ffn.parameters()])

    def step():
        x = torch.randint(0, 3120, (8, 128))
        logits = ffn(emb(x)) @ emb.weight.t()
        loss = torch.nn.functional.cross_entropy(logits.view(-1, 3120), x.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(WARMUP):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(STEPS):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


def faults_in_child(tmp_dir, env):
    out = os.path.join(tmp_dir, "faults.txt")
    pid = toolrun.start(toolrun.Run(func=faults_of_training_steps, stdout=out, env=env, threads=1))
    code, _ = toolrun.wait(pid, timeout=120)
    assert code == 0, open(out).read()
    return int(open(out).read().split()[-1])


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="a C library without mallopt (not glibc)")
def test_a_forked_run_reuses_freed_memory_and_a_users_own_setting_is_left_alone(tmp_path):
    # in a fresh parent, as the demo's runner is: glibc's adaptive threshold is inherited by a forked child,
    # and this test session's own large frees have raised it
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    kept, default = map(int, done.stdout.split())
    assert 3 * kept < default, (kept, default)  # measured: a few thousand at most (copies of the parent's
    # pages, once) against ~3000-5000 per step


if __name__ == "__main__":
    print(faults_in_child(sys.argv[1], {}),
          # a user's own MALLOC_ setting is read by glibc at a process's start, so in a forked child it
          # changes nothing: this child keeps glibc's defaults, which map large tensors afresh
          faults_in_child(sys.argv[1], {"MALLOC_MMAP_THRESHOLD_": "131072"}))
