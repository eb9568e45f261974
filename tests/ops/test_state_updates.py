"""The gated and decayed state updates (ops/gated/) against the token-by-token reference
(ops/gated/naive.causal_gated_reference) and against an explicit decay matrix: float64
to 1e-8 over random shapes, chunk sizes, gates (per head, per feature, none), padding and a
continued state; padded positions leave the state as if absent; extreme gates stay finite; half
precision keeps the state in fp32; the plain-autograd gradient is right (gradcheck)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairseq_t2r import ops

TOL = 1e-8


def inputs(B, H, T, F, D, gate, seed, dtype=torch.float64, signed=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, T, F, generator=g, dtype=dtype)
    k = torch.rand(B, H, T, F, generator=g, dtype=dtype)
    if signed:
        q, k = q - 0.3, k - 0.3
    v = torch.randn(B, H, T, D, generator=g, dtype=dtype)
    shape = {"none": None, "head": (B, H, T), "feature": (B, H, T, F)}[gate]
    log_g = None if shape is None else torch.nn.functional.logsigmoid(3 * torch.randn(*shape, generator=g, dtype=dtype))
    return q, k, v, log_g


def pad(q, k, log_g, mask):
    """Padding as the attention module applies it: zero features and a zero log-gate."""
    k = ops.mask_padded_keys(k, mask)
    if log_g is not None:
        m = mask[:, None, :] if log_g.dim() == 3 else mask[:, None, :, None]
        log_g = log_g.masked_fill(m, 0.0)
    return q, k, log_g


def steps(q, k, v, log_g, state, normalize, t0=0):
    outs = []
    for t in range(t0, q.size(2)):
        lg = None if log_g is None else log_g[:, :, t : t + 1]
        o, state = ops.gated_step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], lg, state=state,
                                  normalize=normalize)
        outs.append(o)
    return outs, state


@st.composite
def cases(draw):
    T = draw(st.integers(1, 70))
    B = draw(st.integers(1, 3))
    return {
        "B": B, "H": draw(st.integers(1, 3)), "T": T, "F": draw(st.integers(1, 6)), "D": draw(st.integers(1, 5)),
        "gate": draw(st.sampled_from(["none", "head", "feature"])),
        "normalize": draw(st.booleans()),
        "chunk": draw(st.sampled_from([1, 3, 16, 64])),
        "split": draw(st.integers(0, T)),  # prefix length run by the chunked form, the rest by steps
        "padded": draw(st.lists(st.integers(0, T - 1), max_size=4)),
        "seed": draw(st.integers(0, 2**16)),
        "signed": draw(st.booleans()),
    }


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_chunked_equals_steps_equals_reference_property(case):
    c = case
    q, k, v, log_g = inputs(c["B"], c["H"], c["T"], c["F"], c["D"], c["gate"], c["seed"], signed=c["signed"])
    mask = torch.zeros(c["B"], c["T"], dtype=torch.bool)
    mask[0, c["padded"]] = True
    q, k, log_g = pad(q, k, log_g, mask)
    norm = c["normalize"]
    ref = ops.causal_gated_reference(q, k, v, log_g, normalize=norm)
    chunked = ops.causal_gated(q, k, v, log_g, chunk_size=c["chunk"], normalize=norm)
    assert (chunked - ref).abs().max().item() <= TOL
    s = c["split"]
    head = None if log_g is None else log_g[:, :, :s]
    state = ops.empty_state(k, v)
    outs = []
    if s:
        out, state = ops.causal_gated(q[:, :, :s], k[:, :, :s], v[:, :, :s], head, chunk_size=c["chunk"],
                                      return_state=True, normalize=norm)
        outs.append(out)
    rest, _ = steps(q, k, v, log_g, state, norm, t0=s)
    assert (torch.cat(outs + rest, 2) - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("gate", ["head", "feature"])
def test_padded_positions_leave_the_state_as_if_absent(gate):
    """Padding anywhere (left, middle): the real positions' outputs equal those of the sequence
    with the padded positions removed, and so does the final state."""
    q, k, v, log_g = inputs(1, 2, 30, 4, 3, gate, seed=4)
    mask = torch.zeros(1, 30, dtype=torch.bool)
    mask[0, [0, 1, 2, 11, 12, 20]] = True
    qp, kp, lgp = pad(q, k, log_g, mask)
    out, (S, z) = ops.causal_gated(qp, kp, v, lgp, chunk_size=8, return_state=True)
    keep = ~mask[0]
    alone, (S1, z1) = ops.causal_gated(q[:, :, keep], k[:, :, keep], v[:, :, keep], log_g[:, :, keep],
                                       chunk_size=8, return_state=True)
    assert (out[:, :, keep] - alone).abs().max().item() <= TOL
    assert (S - S1).abs().max().item() <= TOL and (z - z1).abs().max().item() <= TOL


def test_decay_equals_explicit_decay_matrix():
    """A per-head decay (its log-gates through causal_gated) against the (T, T) weights w_ij = g_h^(i-j) phi_q_i . phi_k_j, normalised by
    their sum, built directly (RetNet's parallel form), with right padding."""
    B, H, T, F, D = 2, 3, 50, 4, 5
    q, k, v, _ = inputs(B, H, T, F, D, "none", seed=1)
    g = torch.tensor([0.5, 0.9, 0.999], dtype=torch.float64)
    mask = torch.arange(T)[None, :] >= torch.tensor([T, 31])[:, None]
    k = ops.mask_padded_keys(k, mask)
    out = ops.causal_gated(q, k, v, ops.decay_log_gates(g.log(), B, T, mask), chunk_size=16)
    i = torch.arange(T, dtype=torch.float64)
    dmat = (g.view(H, 1, 1) ** (i[:, None] - i[None, :]).clamp(min=0)).tril()  # (H, T, T)
    w = torch.matmul(q, k.transpose(-1, -2)) * dmat
    want = torch.matmul(w, v) / w.sum(-1, keepdim=True).clamp(min=ops.DEFAULT_EPS)
    real = ~mask[:, None, :, None]  # positions after the padding start differ (no decay there)
    assert ((out - want) * real).abs().max().item() <= TOL
    # the step form with the same decays
    state, outs = ops.empty_state(k, v), []
    for t in range(T):
        o, state = ops.gated_step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1],
                                  ops.decay_log_gates(g.log(), B, 1, mask[:, : t + 1]), state=state)
        outs.append(o)
    assert (torch.cat(outs, 2) - out).abs().max().item() <= TOL


@pytest.mark.parametrize("gate", ["head", "feature"])
def test_extreme_gates_stay_finite_in_fp32(gate):
    """Gates near 0 (log g = -60 per token) and near 1: every exponent is <= 0 (log space)."""
    q, k, v, log_g = inputs(1, 2, 200, 4, 3, gate, seed=2, dtype=torch.float32)
    for lg in (torch.full_like(log_g, -60.0), torch.full_like(log_g, -1e-7)):
        out = ops.causal_gated(q, k, v, lg)
        ref = ops.causal_gated_reference(q, k, v, lg)
        assert torch.isfinite(out).all()
        assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_keeps_state_and_normaliser_in_fp32(dtype):
    q, k, v, log_g = inputs(2, 2, 90, 4, 3, "feature", seed=3)
    want = ops.causal_gated_reference(q, k, v, log_g)
    out, (S, z) = ops.causal_gated(q.to(dtype), k.to(dtype), v.to(dtype), log_g.to(dtype), return_state=True)
    assert out.dtype == dtype and S.dtype == torch.float32 and z.dtype == torch.float32
    _, (S2, z2) = ops.gated_step(q[:, :, :1].to(dtype), k[:, :, :1].to(dtype), v[:, :, :1].to(dtype),
                                 log_g[:, :, :1].to(dtype), state=(S, z))
    assert S2.dtype == torch.float32 and z2.dtype == torch.float32
    assert (out.double() - want).abs().max().item() < 0.05


@pytest.mark.parametrize("gate", ["head", "feature"])
def test_gradient_of_the_chunked_form(gate):
    q, k, v, log_g = inputs(1, 1, 9, 2, 2, gate, seed=5)
    args = [t.clone().requires_grad_() for t in (q, k, v, log_g)]
    assert torch.autograd.gradcheck(lambda a, b, c, d: ops.causal_gated(a, b, c, d, chunk_size=4), args)


@pytest.mark.parametrize("chunk", [8, 64])
def test_feature_gates_two_levels_strong_gates_continued_state(chunk):
    """Per-feature gates (ops/gate_feature.py): chunks of C (a scan across them) and halving within
    them, at a length that is a multiple of neither C nor any half (T = 150), with log-gates down to
    -20 per token (exp of a cumulative log-gate would under/overflow), continued from the state of a
    37-token prefix and returning its final state: against the token-by-token reference and steps."""
    B, H, T, F, D, P = 2, 2, 150, 5, 3, 37
    q, k, v, _ = inputs(B, H, T, F, D, "none", seed=6)
    g = torch.Generator().manual_seed(7)
    log_g = -20 * torch.rand(B, H, T, F, generator=g, dtype=torch.float64) ** 3  # many near 0, some near -20
    log_g[:, :, ::7] = -20.0
    ref = ops.causal_gated_reference(q, k, v, log_g)
    head, state = ops.causal_gated(q[:, :, :P], k[:, :, :P], v[:, :, :P], log_g[:, :, :P], chunk_size=chunk,
                                   return_state=True)
    rest, (S, z) = ops.causal_gated(q[:, :, P:], k[:, :, P:], v[:, :, P:], log_g[:, :, P:], chunk_size=chunk,
                                    initial_state=state, return_state=True)
    assert torch.isfinite(rest).all()
    assert (torch.cat([head, rest], 2) - ref).abs().max().item() <= TOL
    _, (S1, z1) = steps(q, k, v, log_g, ops.empty_state(k, v), True)
    assert (S - S1).abs().max().item() <= TOL and (z - z1).abs().max().item() <= TOL


@pytest.mark.parametrize("gate", ["head", "feature"])
def test_gradient_of_the_gated_forms_with_states(gate):
    """gradcheck through the hand-written backwards (the scan across chunks, per head and per
    feature, and the halving within them, per feature), an initial state and the returned final
    state, chunks of 4 over 11 tokens."""
    q, k, v, log_g = inputs(1, 1, 11, 2, 2, gate, seed=8)
    S0, z0 = torch.rand(1, 1, 2, 2, dtype=torch.float64), torch.rand(1, 1, 2, dtype=torch.float64)
    args = [t.clone().requires_grad_() for t in (q, k, v, log_g, S0, z0)]

    def f(a, b, c, d, s, z):
        out, (S, zz) = ops.causal_gated(a, b, c, d, chunk_size=4, initial_state=(s, z), return_state=True)
        return out, S, zz

    assert torch.autograd.gradcheck(f, args)
