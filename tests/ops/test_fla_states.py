"""The fla glue of the state updates (ops/gated/fla.py, ops/delta/fla.py) with stand-in kernels written here from
fla 0.6.0's documented semantics (token by token, fla's layout (B, T, H, *), per-token log-gates,
``scale`` defaulting to 1 / sqrt(K)): layouts, gates, our normaliser, padding, states and
gradients equal our forms in float64; and the policy (dispatch.state_form) picks fla only on
CUDA with FAIRSEQ_T2R_FLA=1. No CUDA and no fla needed: the real kernels are checked by
benchmarks/gpu_fla_states_check.py (Triton's interpreter on CPU, or a GPU)."""
import pytest
import torch
import torch.nn.functional as nnf

from fairseq_t2r import ops
from fairseq_t2r.ops import dispatch, kernels
from fairseq_t2r.ops.gated import fla as gated_fla

TOL = 1e-8


def _recurrence(q, k, v, scale, h0, decay, write):
    """fla's recurrences, token by token in (B, T, H, *): h = decay(h, t), h = write(h, t),
    o_t = scale q_t . h. -> (o (B, T, H, V), final h (B, H, K, V))."""
    B, T, H, K = q.shape
    h = q.new_zeros(B, H, K, v.size(-1)) if h0 is None else h0
    scale = K ** -0.5 if scale is None else scale
    outs = []
    for t in range(T):
        h = write(decay(h, t), t)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, h))
    return torch.stack(outs, 1), h


def fake_simple_gla(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
    assert g is None or g.shape == q.shape[:3]  # (B, T, H): one log-gate per head and token
    decay = (lambda h, t: h) if g is None else (lambda h, t: h * g[:, t].exp()[..., None, None])
    o, h = _recurrence(q, k, v, scale, initial_state, decay, lambda h, t: h + k[:, t, :, :, None] * v[:, t, :, None, :])
    return o, (h if output_final_state else None)


def fake_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    assert g.shape == q.shape  # (B, T, H, K): one log-gate per feature
    o, h = _recurrence(q, k, v, scale, initial_state, lambda h, t: h * g[:, t].exp()[..., None],
                       lambda h, t: h + k[:, t, :, :, None] * v[:, t, :, None, :])
    return o, (h if output_final_state else None)


def fake_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                          use_qk_l2norm_in_kernel=False):
    if use_qk_l2norm_in_kernel:  # fla's convention (eps added to the squared norm), not ours
        q, k = (x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6) for x in (q, k))

    def write(h, t):
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhkv,bhk->bhv", h, k[:, t]))
        return h + k[:, t, :, :, None] * u[:, :, None, :]

    o, h = _recurrence(q, k, v, scale, initial_state, lambda h, t: h * g[:, t].exp()[..., None, None], write)
    return o, (h if output_final_state else None)


STAND_INS = {"simple_gla": fake_simple_gla, "gla": fake_gla, "gated_delta_rule": fake_gated_delta_rule}


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setattr(kernels, "_FLA_STATE_KERNELS", dict(STAND_INS))


def inputs(gates, B=2, H=3, T=37, F=5, D=4, seed=0):
    """float64 leaves: q, k (B, H, T, F) >= 0, v (B, H, T, D), log-gates for ``gates`` ("head",
    "feature", "decay" (H,), None), and a padding mask (B, T) (left padding in sequence 1)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k = nnf.relu(r(B, H, T, F)), nnf.relu(r(B, H, T, F))
    q[:, :, :2] *= 1e-4  # denominators below eps: the clamp
    shapes = {"head": (B, H, T), "feature": (B, H, T, F), "decay": (H,)}
    log_g = None if gates is None else nnf.logsigmoid(r(*shapes[gates]) + 1.0)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, :6] = True
    return [t if t is None else t.requires_grad_() for t in (q, k, r(B, H, T, D), log_g)], mask


def padded_log_gates(log_g, gates, mask, B, T):
    """Log-gates as the module passes them: 0 at padded positions."""
    if gates is None:
        return None
    if gates == "decay":
        return ops.decay_log_gates(log_g, B, T, mask)
    return log_g.masked_fill(mask[:, None, :, None] if log_g.dim() == 4 else mask[:, None, :], 0.0)


def assert_close(got, want):
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("gates", ["head", "feature", "decay", None])
@pytest.mark.parametrize("normalize", [True, False])
def test_gated_glue_equals_causal_gated(stand_ins, gates, normalize):
    (q, k, v, log_g), mask = inputs(gates)
    B, H, T, F = q.shape
    S0 = torch.randn(B, H, F, v.size(-1), dtype=torch.float64, requires_grad=True)
    z0 = torch.rand(B, H, F, dtype=torch.float64, requires_grad=True)
    leaves = [x for x in (q, k, v, log_g, S0, z0) if x is not None]

    def run(fn, **kw):
        lg = padded_log_gates(log_g, gates, mask, B, T)
        out, (S, z) = fn(q, ops.mask_padded_keys(k, mask), v, lg, initial_state=(S0, z0), return_state=True,
                         normalize=normalize, **kw)
        return [out, S, z]

    want = run(ops.causal_gated, chunk_size=16)  # ours in chunks of 16 (the glue ignores chunk_size)
    got = run(ops.causal_gated_fla)
    assert_close(got, want)
    seeds = [torch.randn_like(w) for w in want]
    assert_close(torch.autograd.grad(got, leaves, seeds), torch.autograd.grad(want, leaves, seeds))
    # without a state: the output alone, as training calls it
    lg = padded_log_gates(log_g, gates, mask, B, T)
    assert_close([ops.causal_gated_fla(q, ops.mask_padded_keys(k, mask), v, lg, normalize=normalize)],
                 [ops.causal_gated(q, ops.mask_padded_keys(k, mask), v, lg, normalize=normalize)])


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_delta_glue_equals_delta_chunked(stand_ins, gated, with_state):
    (q, k, v, log_g), mask = inputs("head" if gated else None, seed=1)
    q, k = q * 3.0, k * 3.0  # features far from unit norm: the L2 norm is the glue's (ours)
    B, H, T, F = q.shape
    beta = torch.rand(B, H, T, dtype=torch.float64, requires_grad=True)
    S0 = torch.randn(B, H, F, v.size(-1), dtype=torch.float64, requires_grad=True) if with_state else None
    leaves = [x for x in (q, k, v, log_g, beta, S0) if x is not None]

    def run(fn, **kw):
        lg = ops.mask_padded_log_gates(log_g, mask) if gated else None
        res = fn(q, ops.mask_padded_keys(k, mask), v, lg, beta, initial_state=S0, return_state=with_state, **kw)
        return list(res) if with_state else [res]

    want = run(ops.delta_chunked, chunk_size=8)
    got = run(ops.delta_fla)
    assert_close(got, want)
    seeds = [torch.randn_like(w) for w in want]
    assert_close(torch.autograd.grad(got, leaves, seeds), torch.autograd.grad(want, leaves, seeds))


def test_policy_picks_fla_only_on_cuda_with_the_switch(monkeypatch, stand_ins, backends):
    f32 = torch.float32
    for kernel in STAND_INS:
        backends(fla=False)
        assert ops.state_form(8, True, f32, kernel) == "torch"  # switch off
        backends(fla=True)
        assert ops.state_form(8, True, f32, kernel) == "fla"
        assert ops.state_form(8, True, torch.bfloat16, kernel) == "fla"
        assert ops.state_form(8, False, f32, kernel) == "torch"  # CPU
        assert ops.state_form(0, True, f32, kernel) == "torch"  # no token: ours
        assert ops.state_form(8, True, torch.float64, kernel) == "torch"  # no float64 Triton kernels
    monkeypatch.setattr(kernels, "_FLA_STATE_KERNELS", {"simple_gla": fake_simple_gla})
    assert ops.state_form(8, True, f32, "gla") == "torch"  # that kernel missing: ours
    monkeypatch.setattr(kernels, "_FLA_STATE_KERNELS", False)  # fla not importable
    assert ops.state_form(8, True, f32, "simple_gla") == "torch"
    x = torch.zeros(1, 1, 2, 3)
    assert gated_fla.gated_kernel_name(None) == gated_fla.gated_kernel_name(x[..., 0]) == "simple_gla"
    assert gated_fla.gated_kernel_name(x) == "gla"


def test_parallel_entry_points_run_the_chosen_form(monkeypatch, stand_ins, backends):
    (q, k, v, log_g), _ = inputs("feature", T=9)
    beta = torch.rand(q.shape[:3], dtype=torch.float64)
    calls = []
    backends(fla=True)
    monkeypatch.setattr(kernels, "_FLA_STATE_KERNELS", {n: (lambda n, f: lambda *a, **kw: calls.append(n) or f(*a, **kw))(n, f)
                                                           for n, f in STAND_INS.items()})
    # CPU tensors: ours, even with the switch on and the kernels there
    assert_close([ops.gated_parallel(q, k, v, log_g)], [ops.causal_gated(q, k, v, log_g)])
    assert_close([ops.delta_parallel(q, k, v, None, beta)], [ops.delta_chunked(q, k, v, None, beta)])
    assert calls == []
    monkeypatch.setattr(dispatch, "state_form", lambda *a: "fla")  # as on CUDA
    assert_close([ops.gated_parallel(q, k, v, log_g)], [ops.causal_gated(q, k, v, log_g)])
    assert_close([ops.gated_parallel(q, k, v, None, normalize=False)], [ops.causal_gated(q, k, v, None, normalize=False)])
    assert_close([ops.delta_parallel(q, k, v, log_g[..., 0], beta)],
                 [ops.delta_chunked(q, k, v, log_g[..., 0], beta)])
    assert calls == ["gla", "simple_gla", "gated_delta_rule"]


def test_fla_absent_means_our_forms(monkeypatch, backends):
    monkeypatch.setattr(kernels, "_FLA_STATE_KERNELS", None)  # look it up afresh
    backends(fla=True)
    try:
        import fla  # noqa: F401
    except ImportError:
        assert all(kernels.fla_state_kernel(n) is None for n in STAND_INS)
        assert ops.state_form(8, True, torch.float32, "gla") == "torch"
    else:  # installed (fla 0.6.0 names them so): every kernel is found
        assert all(kernels.fla_state_kernel(n) is not None for n in STAND_INS)
