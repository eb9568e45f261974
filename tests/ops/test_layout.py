"""The ops package stands alone: importing it imports no fairseq, and its naive references agree
with the forms they are independent of."""
import subprocess
import sys

import torch

from fairseq_t2r import ops


def test_importing_ops_does_not_import_fairseq():
    code = "import sys, fairseq_t2r.ops; print('fairseq' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False", "import fairseq_t2r.ops imported fairseq"


def _features(B, H, T, S, F, D, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, T, F, dtype=torch.float64, generator=g)
    k = torch.rand(B, H, S, F, dtype=torch.float64, generator=g)
    v = torch.randn(B, H, S, D, dtype=torch.float64, generator=g)
    q[:, :, :2] *= 1e-4  # denominators below eps: the clamp
    return q, k, v


def test_noncausal_forms_match_their_reference():
    q, k, v = _features(2, 3, 7, 11, 4, 5, seed=0)
    ref = ops.noncausal_reference(q, k, v)
    assert (ops.noncausal(q, k, v) - ref).abs().max().item() <= 1e-10
    assert (ops.noncausal(q, k, v, weight_dropout=lambda w: w) - ref).abs().max().item() <= 1e-10


def test_causal_reference_is_the_recurrent_step_run_token_by_token():
    q, k, v = _features(2, 3, 9, 9, 4, 5, seed=1)
    state, outs = ops.empty_state(k, v), []
    for t in range(q.size(-2)):
        o, state = ops.recurrent_step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state=state)
        outs.append(o)
    assert torch.equal(torch.cat(outs, -2), ops.causal_reference(q, k, v))
