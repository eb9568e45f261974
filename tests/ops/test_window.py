"""Window softmax + linear branch (ops/window): the chunked training form and the decoding step
against the token-by-token float64 reference (1e-8), with left padding, W past the sequence, W = 1,
beam reordering of the ring buffer mid-sequence, Liger's mix, a decayed state plugged into the
reference, and finite gradients."""
import math

import pytest
import torch

from fairseq_t2r.ops import softmax_attention
from fairseq_t2r.ops import window as win

B, H, T, D, F = 3, 2, 19, 4, 5


def inputs(seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=dtype) * s for s in (scale * D ** -0.5, scale, 1.0))
    phi_q, phi_k = (torch.relu(torch.randn(B, H, T, F, generator=g, dtype=dtype)) for _ in range(2))
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, :5] = True  # left padding, as fairseq pads a batch
    kpm[2, :1] = True
    return q, k, v, phi_q, phi_k, kpm


LOG_FACTOR = torch.tensor([0.3, -1.2], dtype=torch.float64)


def stepwise(q, k, v, phi_q, phi_k, window, kpm=None, reorder_at=None, order=None, **kw):
    state = win.init_state(B, H, window, D, F, dtype=v.dtype)
    outs = []
    for t in range(T):
        if t == reorder_at:
            state = win.reorder(state, order)
            q, k, v, phi_q, phi_k = (x.index_select(0, order) for x in (q, k, v, phi_q, phi_k))
            kpm = kpm.index_select(0, order) if kpm is not None else None
            outs = [o.index_select(0, order) for o in outs]
        pad = None if kpm is None else kpm[:, t]
        tok = slice(t, t + 1)
        o, state = win.window_step(phi_q[:, :, tok], phi_k[:, :, tok], v[:, :, tok], state=state, inplace=True,
                                   q=q[:, :, tok], k=k[:, :, tok], pad=pad, **kw)
        outs.append(o)
    return torch.cat(outs, 2), state


@pytest.mark.parametrize("window", [1, 3, 7, T, T + 5])
@pytest.mark.parametrize("chunk", [None, 4])
def test_chunked_and_step_equal_the_reference(window, chunk):
    q, k, v, phi_q, phi_k, kpm = inputs()
    want = win.window_naive(q, k, v, phi_q, phi_k, window, log_factor=LOG_FACTOR, key_padding_mask=kpm)
    got = win.windowed_linear(q, k, v, phi_q, phi_k, window, LOG_FACTOR, key_padding_mask=kpm, chunk=chunk)
    assert torch.allclose(got, want, atol=1e-8, rtol=0), (got - want).abs().max()
    stepped, state = stepwise(q, k, v, phi_q, phi_k, window, kpm, log_factor=LOG_FACTOR)
    assert torch.allclose(stepped, want, atol=1e-8, rtol=0), (stepped - want).abs().max()
    assert state.k.shape == (B, H, window, D)  # the buffer: W slots, whatever the length
    assert torch.equal(want[1, :, :5], torch.zeros_like(want[1, :, :5]))  # padded queries see nothing


def test_large_scores_are_stable():
    """Scores in the hundreds overflow an unshifted exp (float32 past 88): with the joint shift both
    forms stay finite, and float32 agrees with float64."""
    q, k, v, phi_q, phi_k, kpm = inputs(1, scale=30.0)
    for dtype in (torch.float64, torch.float32):
        args = [x.to(dtype) for x in (q, k, v, phi_q, phi_k)]
        out = win.windowed_linear(*args, 4, LOG_FACTOR.to(dtype), key_padding_mask=kpm)
        stepped, _ = stepwise(*args, 4, kpm, log_factor=LOG_FACTOR.to(dtype))
        assert torch.isfinite(out).all() and torch.isfinite(stepped).all()
        assert torch.allclose(out.double(), stepped.double(), atol=1e-4 if dtype == torch.float32 else 1e-10)
        if dtype == torch.float64:
            ref64 = out
        else:
            assert torch.allclose(out.double(), ref64, atol=1e-4)


def test_window_past_the_sequence_is_plain_softmax():
    q, k, v, phi_q, phi_k, kpm = inputs()
    hidden = torch.ones(T, T, dtype=torch.bool).triu(1) | kpm[:, None, None, :]
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k).masked_fill(hidden, -math.inf), -1)
    teacher = torch.einsum("bhij,bhjd->bhid", weights.nan_to_num(0.0), v)  # float64 softmax attention
    alone = win.windowed_softmax(q, k, v, T, key_padding_mask=kpm)
    assert torch.allclose(alone, win.windowed_softmax(q, k, v, T + 7, key_padding_mask=kpm), atol=1e-12, rtol=0)
    assert torch.allclose(alone, teacher, atol=1e-12, rtol=0)
    # the op attention transfer fits to (fairseq's softmax: weights in float32)
    assert torch.allclose(alone, softmax_attention(q, k, v, kpm, causal=True)[0], atol=1e-6, rtol=0)
    no_linear = torch.full((H,), -math.inf, dtype=torch.float64)
    for window in (4, T):  # no linear factor: the teacher's softmax over the window
        out = win.windowed_linear(q, k, v, phi_q, phi_k, window, no_linear, key_padding_mask=kpm)
        assert torch.allclose(out, win.windowed_softmax(q, k, v, window, key_padding_mask=kpm), atol=1e-12, rtol=0)
    # W >= T: the linear branch is empty, the factor does not matter
    out = win.windowed_linear(q, k, v, phi_q, phi_k, T, LOG_FACTOR, key_padding_mask=kpm)
    assert torch.allclose(out, teacher, atol=1e-12, rtol=0)


def test_beam_reordering_mid_sequence():
    q, k, v, phi_q, phi_k, kpm = inputs(2)
    order = torch.tensor([2, 0, 0])
    want = win.window_naive(q, k, v, phi_q, phi_k, 4, log_factor=LOG_FACTOR, key_padding_mask=kpm)
    # reordering at step 9 (the buffer full and wrapped, older tokens in the state) equals having
    # decoded the reordered rows from the start
    got, _ = stepwise(q, k, v, phi_q, phi_k, 4, kpm, reorder_at=9, order=order, log_factor=LOG_FACTOR)
    assert torch.allclose(got, want.index_select(0, order), atol=1e-8, rtol=0)


def test_liger_mix_for_states_without_a_sum_normaliser():
    """A read without a denominator (the delta rules' RMS-normed output) is mixed, not summed."""
    q, k, v, phi_q, phi_k, kpm = inputs(3)
    logit = torch.tensor([0.5, -2.0], dtype=torch.float64)

    def rms_read(state, phi_q_i):  # a stand-in: the additive read-out, RMS-normalised per head
        num = torch.einsum("bhf,bhfd->bhd", phi_q_i, state[0])
        return num / (num.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt(), None

    want = win.window_naive(q, k, v, phi_q, phi_k, 5, mix_logit=logit, key_padding_mask=kpm, read=rms_read)
    stepped, _ = stepwise(q, k, v, phi_q, phi_k, 5, kpm, mix_logit=logit, read=rms_read)
    assert torch.allclose(stepped, want, atol=1e-8, rtol=0)
    # the parallel side: the window alone mixed with the branch computed on the shifted stream
    n_lin, _ = win.chunked.shifted_linear(phi_q, phi_k.masked_fill(kpm[:, None, :, None], 0), v, 5)
    lin = n_lin / (n_lin.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    got = win.mix(win.windowed_softmax(q, k, v, 5, key_padding_mask=kpm), lin, logit)
    assert torch.allclose(got, want, atol=1e-8, rtol=0)


def test_decayed_state_plugs_into_the_reference_and_the_step():
    """A decayed state as the callable step: the branch weighs key j at query i by g^(i-W-j), the
    state having lagged W steps (explicit weights, computed here without any recurrence)."""
    q, k, v, phi_q, phi_k, kpm = inputs(4)
    gamma, window = 0.8, 3

    def decay_step(state, phi_k_j, v_j, valid_j):
        S, z = state
        f = phi_k_j * valid_j[:, None, None].double()
        return gamma * S + f[..., None] * v_j[..., None, :], gamma * z + f

    got = win.window_naive(q, k, v, phi_q, phi_k, window, log_factor=LOG_FACTOR, key_padding_mask=kpm, step=decay_step)
    stepped, _ = stepwise(q, k, v, phi_q, phi_k, window, kpm, log_factor=LOG_FACTOR, push=decay_step)
    assert torch.allclose(stepped, got, atol=1e-8, rtol=0)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    valid = ~kpm[:, None, None, :]
    decays = torch.tensor(gamma, dtype=torch.float64) ** (i - window - j).clamp(min=0)  # float64 powers
    lin_w = torch.einsum("bhif,bhjf->bhij", phi_q, phi_k) * torch.where(j <= i - window, decays, 0.0)
    lin_w = lin_w * valid * LOG_FACTOR.exp()[:, None, None]
    s = torch.einsum("bhid,bhjd->bhij", q, k)
    win_w = torch.where((j <= i) & (j > i - window) & valid, s.exp(), 0.0)
    w = win_w + lin_w
    want = torch.einsum("bhij,bhjd->bhid", w, v) / w.sum(-1, keepdim=True).clamp(min=1e-300)
    assert torch.allclose(got, want, atol=1e-8, rtol=0)


def test_gradients_are_finite():
    q, k, v, phi_q, phi_k, kpm = (x.float() if x.is_floating_point() else x for x in inputs(5))
    leaves = [x.clone().requires_grad_() for x in (q, k, v, phi_q, phi_k)]
    log_factor = torch.tensor([0.0, -math.inf], requires_grad=True)  # head 1: no linear branch
    mix_logit = torch.tensor([0.3, -0.4], requires_grad=True)
    out = win.windowed_linear(*leaves, 4, log_factor, key_padding_mask=kpm, chunk=8)
    mixed = win.mix(win.windowed_softmax(*leaves[:3], 4, key_padding_mask=kpm), leaves[2] * 0.5, mix_logit)
    (out.pow(2).sum() + mixed.pow(2).sum()).backward()
    for x in (*leaves, log_factor, mix_logit):
        assert x.grad is not None and torch.isfinite(x.grad).all()
    assert log_factor.grad[0] != 0 and log_factor.grad[1] == 0 and (mix_logit.grad != 0).all()


def test_training_memory_grows_linearly_in_the_length():
    """What autograd keeps for the backward (the training form's memory) doubles with the length at a
    fixed window: O(N W), no (N, N) matrix anywhere."""
    def saved_bytes(length, window=8):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 2, length, 4, generator=g, requires_grad=True) for _ in range(3))
        phi_q, phi_k = (torch.rand(1, 2, length, 3, generator=g, requires_grad=True) for _ in range(2))
        total = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: total.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            win.windowed_linear(q, k, v, phi_q, phi_k, window, torch.zeros(2), chunk=16)
        return sum(total)

    small, large = saved_bytes(1024), saved_bytes(4096)
    assert 3.5 < large / small < 4.5, (small, large)  # 4x the length, 4x the memory (not 16x)
    assert large < 4096 * 4096 * 2 * 4 / 8  # far below one (N, N) float matrix per head
