"""The attention against its independent reference: parallel forms vs the token-by-token
recurrence, with padding and beam reordering, for every feature map, in float64 and float32."""
import pytest
import torch
from fairseq.modules import MultiheadAttention
from utils import step_by_step

from fairseq_t2r import ops
from fairseq_t2r.modules import FEATURE_MAPS, T2RAttention

TOL = {torch.float64: 1e-8, torch.float32: 1e-4}
MAPS = sorted(FEATURE_MAPS)


def make_attention(feature_map, dtype, embed_dim=16, heads=2, feature_dim=8, seed=0):
    torch.manual_seed(seed)
    mha = MultiheadAttention(embed_dim, heads, self_attention=True)
    attn = T2RAttention.from_softmax(mha, feature_map, feature_dim)
    return attn.to(dtype).eval()


def right_padding_mask(lengths, T):
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]




@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("feature_map", MAPS)
def test_parallel_equals_recurrent_with_right_padding(feature_map, dtype):
    attn = make_attention(feature_map, dtype)
    T, B = 23, 3
    x = torch.randn(T, B, 16, dtype=dtype)
    kpm = right_padding_mask([23, 17, 5], T)
    with torch.no_grad():
        parallel, _ = attn(x, x, x, key_padding_mask=kpm)
        recurrent, _ = step_by_step(attn, x, kpm)
    assert (parallel - recurrent).abs().max().item() <= TOL[dtype]
    # a padded key changes nothing: same outputs as the unpadded shorter sequence
    with torch.no_grad():
        short, _ = attn(x[:5, 2:3], x[:5, 2:3], x[:5, 2:3])
    assert (short[:, 0] - parallel[:5, 2]).abs().max().item() <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("feature_map", MAPS)
def test_recurrent_after_beam_reordering(feature_map, dtype):
    """Reorder the state mid-sequence with a random (repeating) order, as beam search does."""
    attn = make_attention(feature_map, dtype, seed=1)
    B, m, rest = 4, 7, 6
    gen = torch.Generator().manual_seed(3)
    prefix = torch.randn(m, B, 16, dtype=dtype, generator=gen)
    cont = torch.randn(rest, B, 16, dtype=dtype, generator=gen)
    new_order = torch.randint(0, B, (B,), generator=gen)
    with torch.no_grad():
        _, state = step_by_step(attn, prefix)
        attn.reorder_incremental_state(state, new_order)
        after, _ = step_by_step(attn, cont, state=state)
        full = torch.cat([prefix[:, new_order], cont], 0)
        reference, _ = attn(full, full, full)
    assert (after - reference[m:]).abs().max().item() <= TOL[dtype]


@pytest.mark.parametrize("T,chunk", [(1, 4), (5, 4), (64, 16), (100, 32), (130, 64)])
def test_chunked_equals_quadratic_and_reference(T, chunk):
    gen = torch.Generator().manual_seed(T)
    shape = (2, 3, T)
    q = torch.rand(*shape, 6, dtype=torch.float64, generator=gen)
    k = torch.rand(*shape, 6, dtype=torch.float64, generator=gen)
    v = torch.randn(*shape, 5, dtype=torch.float64, generator=gen)
    quadratic = ops.causal_quadratic(q, k, v)
    chunked = ops.causal_chunked(q, k, v, chunk_size=chunk)
    assert (chunked - quadratic).abs().max().item() <= 1e-10
    assert (ops.causal_reference(q, k, v) - quadratic).abs().max().item() <= 1e-10


def test_chunked_continues_a_state():
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.rand(1, 2, 50, 4, dtype=torch.float64, generator=gen) for _ in range(2))
    v = torch.randn(1, 2, 50, 3, dtype=torch.float64, generator=gen)
    first, state = ops.causal_chunked(q[:, :, :21], k[:, :, :21], v[:, :, :21], chunk_size=8, return_state=True)
    second = ops.causal_chunked(q[:, :, 21:], k[:, :, 21:], v[:, :, 21:], chunk_size=8, initial_state=state)
    assert (torch.cat([first, second], 2) - ops.causal_quadratic(q, k, v)).abs().max().item() <= 1e-10


def test_long_sequence_uses_exact_chunked_form():
    attn = make_attention("t2r", torch.float64)
    T = ops.QUADRATIC_MAX_LEN + 77
    x = torch.randn(T, 1, 16, dtype=torch.float64)
    with torch.no_grad():
        out, _ = attn(x, x, x)
        phi_q = attn.feature_map.forward_queries(attn._heads(attn.q_proj(x) * attn.scaling))
        phi_k = attn.feature_map.forward_keys(attn._heads(attn.k_proj(x)))
        ref = attn.out_proj(attn._unheads(ops.causal_quadratic(phi_q, phi_k, attn._heads(attn.v_proj(x)))))
    assert (out - ref).abs().max().item() <= 1e-8


def test_multi_token_incremental_call_equals_single_steps():
    attn = make_attention("t2r", torch.float64)
    x = torch.randn(12, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        state = {}
        a, _ = attn(x[:8], x[:8], x[:8], incremental_state=state)  # a prompt in one call
        b, _ = step_by_step(attn, x[8:], state=state)
        ref, _ = attn(x, x, x)
    assert (torch.cat([a, b]) - ref).abs().max().item() <= 1e-8


from fairseq_t2r.demo.measure import state_bytes  # noqa: E402  (the demo's and the benchmarks' measure)


def test_state_size_does_not_grow():
    attn = make_attention("t2r", torch.float32)
    x = torch.randn(40, 2, 16)
    with torch.no_grad():
        _, state = step_by_step(attn, x[:1])
        after_one = state_bytes(state)
        step_by_step(attn, x[1:], state=state)
    assert after_one == state_bytes(state) == 2 * 2 * 8 * (8 + 1) * 4  # B*H*F*(D+1) floats


def test_random_features_redrawn_in_training_fixed_in_eval():
    attn = make_attention("rfa", torch.float32)
    x = torch.randn(6, 2, 16)
    attn.eval()
    with torch.no_grad():
        a, _ = attn(x, x, x)
        b, _ = attn(x, x, x)
    assert torch.equal(a, b)
    attn.train()
    before = attn.feature_map.omega.clone()
    attn(x, x, x)
    assert not torch.equal(before, attn.feature_map.omega)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_sums_in_fp32(dtype):
    attn64 = make_attention("t2r", torch.float64)
    attn_half = make_attention("t2r", torch.float32)
    attn_half.load_state_dict(attn64.state_dict())
    attn_half.to(dtype)
    x = torch.randn(600, 1, 16, dtype=torch.float64)  # longer than the quadratic cut-off
    with torch.no_grad():
        ref, _ = attn64(x, x, x)
        out, _ = attn_half(x.to(dtype), x.to(dtype), x.to(dtype))
        _, state = step_by_step(attn_half, x[:3].to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert all(t.dtype == torch.float32 for t in state[next(iter(state))].values())
    assert (out.double() - ref).abs().max().item() < 0.1


def test_attention_dropout_only_in_training():
    torch.manual_seed(0)
    mha = MultiheadAttention(16, 2, dropout=0.5, self_attention=True)
    attn = T2RAttention.from_softmax(mha, "t2r", 8)
    x = torch.randn(10, 2, 16)
    attn.train()
    a, _ = attn(x, x, x)
    b, _ = attn(x, x, x)
    assert not torch.equal(a, b)
    attn.eval()
    c, _ = attn(x, x, x)
    d, _ = step_by_step(attn, x)
    assert (c - d).abs().max().item() < 1e-5


@pytest.mark.parametrize("feature_map", ["t2r", "hedgehog"])
@pytest.mark.parametrize("cross", [False, True])
def test_merged_projections_equal_unmerged(feature_map, cross):
    """At inference the feature MLP is folded into q_proj / k_proj; outputs must not change."""
    torch.manual_seed(0)
    mha = MultiheadAttention(16, 2, encoder_decoder_attention=cross, self_attention=not cross)
    attn = T2RAttention.from_softmax(mha, feature_map, 8).double().eval()
    x = torch.randn(9, 3, 16, dtype=torch.float64)
    kpm = right_padding_mask([9, 6, 2], 9)
    attn.merge_projections = False
    with torch.no_grad():
        unmerged, _ = attn(x, x, x, key_padding_mask=kpm)
    assert not attn.folded.cache
    attn.merge_projections = True
    with torch.enable_grad():  # autograd on: merged, but rebuilt at every call, never cached
        merged_grad, _ = attn(x, x, x, key_padding_mask=kpm)
    assert not attn.folded.cache
    assert (merged_grad - unmerged).abs().max().item() <= 1e-8
    with torch.no_grad():
        merged, _ = attn(x, x, x, key_padding_mask=kpm)
        assert set(attn.folded.cache) == {"q", "k"}
        # the cache follows the weights: a new feature map invalidates it
        attn.feature_map.weight.add_(0.5)
        changed, _ = attn(x, x, x, key_padding_mask=kpm)
    assert (merged - unmerged).abs().max().item() <= 1e-8
    attn.merge_projections = False
    with torch.no_grad():
        reference, _ = attn(x, x, x, key_padding_mask=kpm)
    assert (changed - reference).abs().max().item() <= 1e-8


def test_beam_reorder_of_source_summaries_is_worked_out_once_per_step(monkeypatch):
    """Cross-attention keeps one source summary per sentence under beam search; how a reordering
    moves those summaries is worked out by the first layer and reused by the others (the answer
    is kept in the incremental state, keyed on the new_order tensor), and stays correct."""
    from fairseq_t2r.modules import beam_groups

    torch.manual_seed(0)
    layers = [
        T2RAttention.from_softmax(MultiheadAttention(16, 2, encoder_decoder_attention=True), "t2r", 8).double().eval()
        for _ in range(2)
    ]
    beam, nsent = 2, 3
    src = torch.randn(5, nsent, 16, dtype=torch.float64).repeat_interleave(beam, 1)  # beam copies of each source
    query = torch.randn(1, nsent * beam, 16, dtype=torch.float64)
    worked_out = []
    real = beam_groups.follow_reorder

    def counting(state, *args):
        before = state.get(beam_groups.REORDER_MEMO_KEY)
        answer = real(state, *args)
        worked_out.append(state[beam_groups.REORDER_MEMO_KEY] is not before)
        return answer

    monkeypatch.setattr(beam_groups, "follow_reorder", counting)
    state = {}
    new_order = torch.tensor([1, 0, 4, 5, 2, 3])  # beams swapped within sentence 0, sentences 1 and 2 swapped
    with torch.no_grad():
        for attn in layers:
            attn.set_beam_size(beam)
            attn(query, src, src, incremental_state=state)
        for attn in layers:
            attn.reorder_incremental_state(state, new_order)
        got = [attn(query, src[:, new_order], src[:, new_order], incremental_state=state)[0] for attn in layers]
        want = [attn(query, src[:, new_order], src[:, new_order])[0] for attn in layers]
    assert worked_out == [True, False]
    assert all(attn._get_input_buffer(state)["Sz_src"].size(0) == nsent for attn in layers)
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() <= 1e-8
