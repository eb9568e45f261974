"""The delta rule and the gated delta rule (ops/delta/: naive.py, chunked.py, step.py):
chunked == token-by-token reference == repeated steps in float64 to 1e-8 for several lengths
and chunk sizes, with padding, continuation from a state, beam reordering, equal gradients,
half precision against float64, and a property-based check over random shapes."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairseq_t2r import ops

TOL = 1e-8
F, D = 6, 5


def make(B=2, H=3, T=11, gated=False, seed=0, dtype=torch.float64, scale=1.0):
    """phi_q, phi_k (B, H, T, F) (phi_k nonnegative, as T2R's features), v (B, H, T, D), the
    log-gate log g with g in (0.3, 1) or None, and beta in (0, 1), (B, H, T): the ops' order."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, F, generator=gen, dtype=torch.float64) * scale
    k = torch.randn(B, H, T, F, generator=gen, dtype=torch.float64).relu() * scale
    v = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64)
    beta = torch.rand(B, H, T, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    log_g = (torch.rand(B, H, T, generator=gen, dtype=torch.float64) * 0.7 + 0.3).log() if gated else None
    return tuple(None if x is None else x.to(dtype) for x in (q, k, v, log_g, beta))


def by_steps(q, k, v, log_g, beta, state=None, inplace=False):
    outs = []
    for t in range(q.size(2)):
        lg = None if log_g is None else log_g[:, :, t : t + 1]
        sl = slice(t, t + 1)
        o, state = ops.delta_step(q[:, :, sl], k[:, :, sl], v[:, :, sl], lg, beta[:, :, sl], state=state, inplace=inplace)
        outs.append(o)
    return torch.cat(outs, 2), state


def close(a, b, tol=TOL):
    return (a - b).abs().max().item() <= tol


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("T", [1, 5, 16, 37])
def test_chunked_and_steps_equal_reference(T, gated):
    q, k, v, log_g, beta = make(T=T, gated=gated, seed=T)
    ref, S_ref = ops.delta_reference(q, k, v, log_g, beta, return_state=True)
    for C in (1, 4, 16, 64):
        out, S = ops.delta_chunked(q, k, v, log_g, beta, chunk_size=C, return_state=True)
        assert close(out, ref) and close(S, S_ref), (T, C)
    out, S = by_steps(q, k, v, log_g, beta)
    assert close(out, ref) and close(S, S_ref)
    with torch.no_grad():  # in place: same result, and the given state is the one updated
        S0 = ops.empty_delta_state(k, v)
        out, S = by_steps(q, k, v, log_g, beta, state=S0, inplace=True)
    assert S is S0 and close(out, ref) and close(S, S_ref)
    with torch.no_grad():  # a non-contiguous state (e.g. a strided view) is updated in place too
        S0 = ops.empty_delta_state(k, v).transpose(0, 1).contiguous().transpose(0, 1)
        out, S = by_steps(q, k, v, log_g, beta, state=S0, inplace=True)
    assert S is S0 and not S.is_contiguous() and close(out, ref) and close(S, S_ref)


@pytest.mark.parametrize("gated", [False, True])
def test_padding_leaves_state_as_if_absent(gated):
    """Left padding (before the tokens) and right padding (after): zero features and log-gate 0 at
    padded positions give the unpadded sequence's outputs and final state, in every form."""
    T, n_pad = 9, 4
    q, k, v, log_g, beta = make(B=1, T=T, gated=gated, seed=3)
    ref, S_ref = ops.delta_reference(q, k, v, log_g, beta, return_state=True)
    for left in (True, False):
        pads = [torch.randn(1, 3, n_pad, x.size(-1), dtype=x.dtype) for x in (q, k, v)]
        pads += [torch.rand(1, 3, n_pad, dtype=torch.float64) for _ in range(2)]
        pads[3] = pads[3].log()  # a random log-gate, which the padding must undo
        parts = [(p, x) if left else (x, p) for p, x in zip(pads, (q, k, v, log_g if gated else beta, beta))]
        qp, kp, vp, gp, bp = (torch.cat(pair, 2) for pair in parts)
        mask = torch.zeros(1, T + n_pad, dtype=torch.bool)
        if left:
            mask[:, :n_pad] = True
        else:
            mask[:, T:] = True
        kp = ops.mask_padded_keys(kp, mask)
        gp = ops.mask_padded_log_gates(gp if gated else None, mask)
        real = slice(n_pad, None) if left else slice(0, T)
        for out, S in (
            ops.delta_reference(qp, kp, vp, gp, bp, return_state=True),
            ops.delta_chunked(qp, kp, vp, gp, bp, chunk_size=4, return_state=True),
            by_steps(qp, kp, vp, gp, bp),
        ):
            assert close(out[:, :, real], ref) and close(S, S_ref), left


@pytest.mark.parametrize("gated", [False, True])
def test_prefix_then_suffix_equals_whole(gated):
    q, k, v, log_g, beta = make(T=23, gated=gated, seed=5)
    whole, S_whole = ops.delta_reference(q, k, v, log_g, beta, return_state=True)
    for split in (1, 7, 16):
        a, b = slice(0, split), slice(split, None)
        lg_a, lg_b = (None, None) if log_g is None else (log_g[:, :, a], log_g[:, :, b])
        for form in (ops.delta_chunked, ops.delta_reference):
            pre, S = form(q[:, :, a], k[:, :, a], v[:, :, a], lg_a, beta[:, :, a], return_state=True)
            suf, S = form(q[:, :, b], k[:, :, b], v[:, :, b], lg_b, beta[:, :, b], initial_state=S, return_state=True)
            assert close(torch.cat([pre, suf], 2), whole) and close(S, S_whole), (form, split)


def test_beam_reordering_of_the_state():
    """Decoding reorders the state along the batch (beam search): stepping on from the reordered
    state equals the reference on the reordered sequences."""
    q, k, v, log_g, beta = make(B=4, T=10, gated=True, seed=7)
    order = torch.tensor([2, 2, 0, 3])
    _, S = by_steps(*(x[:, :, :6] for x in (q, k, v, log_g, beta)))
    rest = [x[:, :, 6:].index_select(0, order) for x in (q, k, v, log_g, beta)]
    out, S = by_steps(*rest, state=S.index_select(0, order))
    ref, S_ref = ops.delta_reference(*(x.index_select(0, order) for x in (q, k, v, log_g, beta)), return_state=True)
    assert close(out, ref[:, :, 6:]) and close(S, S_ref)


@pytest.mark.parametrize("gated", [False, True])
def test_gradients_of_chunked_equal_reference(gated):
    """float64 autograd through every input, the initial state included (T = 13, chunks of 4)."""
    q, k, v, log_g, beta = make(B=1, H=2, T=13, gated=gated, seed=11)
    S0 = torch.randn(1, 2, F, D, dtype=torch.float64) * 0.3
    weight = torch.randn(1, 2, 13, D, dtype=torch.float64)
    grads = []
    for form, kw in ((ops.delta_reference, {}), (ops.delta_chunked, {"chunk_size": 4})):
        leaves = [None if x is None else x.clone().requires_grad_() for x in (q, k, v, log_g, beta, S0)]
        *args, init = leaves
        out, S = form(*args, initial_state=init, return_state=True, **kw)
        ((out * weight).sum() + S.pow(2).sum()).backward()
        grads.append([x.grad for x in leaves if x is not None])
    for g_ref, g in zip(*grads):
        assert close(g, g_ref)


HALF_TOL = {torch.bfloat16: 2e-2, torch.float16: 3e-3, torch.float32: 1e-5}  # measured: 6e-3, 7e-4, 1e-6


@pytest.mark.parametrize("dtype", sorted(HALF_TOL, key=str))
@pytest.mark.parametrize("gated", [False, True])
def test_low_precision_state_in_fp32(dtype, gated):
    q, k, v, log_g, beta = make(B=1, H=2, T=200, gated=gated, seed=13)
    ref = ops.delta_reference(q, k, v, log_g, beta)
    half = [None if x is None else x.to(dtype) for x in (q, k, v, log_g, beta)]
    out, S = ops.delta_chunked(*half, return_state=True)
    _, S_step = ops.delta_step(*(None if x is None else x[:, :, :1] for x in half), state=None)
    assert out.dtype == dtype and S.dtype == torch.float32 and S_step.dtype == torch.float32
    # relative to the output scale; the inputs' own rounding (bf16: 8 bits) dominates
    assert (out.double() - ref).abs().max().item() <= HALF_TOL[dtype] * ref.abs().max().item()


def test_state_bounded_for_large_features():
    """Features x1e4 and 4096 tokens: normalised keys keep the state bounded (fp32, no gate)."""
    q, k, v, _, beta = make(B=1, H=1, T=4096, seed=17, dtype=torch.float32, scale=1e4)
    out, S = ops.delta_chunked(q, k, v, None, beta, return_state=True)
    assert torch.isfinite(out).all() and S.norm() <= v.norm(dim=-1).max() * F**0.5 * 4


def test_bad_shapes_raise_one_clear_error():
    q, k, v, log_g, beta = make(gated=True)
    with pytest.raises(ValueError, match="beta has shape"):
        ops.delta_chunked(q, k, v, None, beta[:, :, :-1])
    with pytest.raises(ValueError, match="log_g has shape"):
        ops.delta_step(q[:, :, :1], k[:, :, :1], v[:, :, :1], log_g, beta[:, :, :1])


@settings(max_examples=20, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 40),
    chunk=st.sampled_from([1, 3, 8, 64]),
    gated=st.booleans(),
    pad=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_reference_property(B, T, chunk, gated, pad, seed):
    """Random shapes, chunk sizes and right padding (zero features, log-gate 0): float64 within 1e-8."""
    q, k, v, log_g, beta = make(B=B, H=2, T=T, gated=gated, seed=seed)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, max(T - pad, 0) :] = True
    k, log_g = ops.mask_padded_keys(k, mask), ops.mask_padded_log_gates(log_g, mask)
    ref, S_ref = ops.delta_reference(q, k, v, log_g, beta, return_state=True)
    out, S = ops.delta_chunked(q, k, v, log_g, beta, chunk_size=chunk, return_state=True)
    assert close(out, ref) and close(S, S_ref)
