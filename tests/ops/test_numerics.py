"""Numerics of T2RAttention: 8192-token sequences, adversarial activation scales (x1e4, x1e-4),
bf16 on CPU, and property-based parallel == recurrent checks (hypothesis) over random batch
sizes, lengths, right-padding patterns, feature maps and dtypes."""
import pytest
import torch
from fairseq.modules import MultiheadAttention
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from utils import step_by_step

from fairseq_t2r import ops
from fairseq_t2r.modules import FEATURE_MAPS, T2RAttention

MAPS = sorted(FEATURE_MAPS)
NONNEGATIVE_MAPS = [m for m in MAPS if m != "rfa"]  # rfa's sin/cos features can be negative
EMBED, HEADS, FDIM = 32, 4, 8
LONG = 8192
TOL = {torch.float64: 1e-8, torch.float32: 1e-4}




def make_attention(feature_map, dtype=torch.float32, seed=0, training=False):
    torch.manual_seed(seed)
    mha = MultiheadAttention(EMBED, HEADS, self_attention=True)
    attn = T2RAttention.from_softmax(mha, feature_map, FDIM).to(dtype)
    return attn.train(training)


def features(attn, x):
    """phi(q), phi(k), v of the module for input x (T, B, C), head-major."""
    phi_q = attn.feature_map.forward_queries(attn._heads(attn.q_proj(x) * attn.scaling))
    phi_k = attn.feature_map.forward_keys(attn._heads(attn.k_proj(x)))
    return phi_q, phi_k, attn._heads(attn.v_proj(x))




def all_finite(*tensors):
    return all(bool(torch.isfinite(t).all()) for t in tensors)


# ------------------------------------------------------------------ long and adversarial inputs
@pytest.mark.parametrize("scale", [1.0, 1e4, 1e-4])
@pytest.mark.parametrize("feature_map", MAPS)
def test_long_adversarial_fp32_outputs_and_gradients_finite(feature_map, scale):
    """8192 tokens (the chunked training form) in training mode: forward and backward finite."""
    attn = make_attention(feature_map, training=True)
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(LONG, 1, EMBED, generator=gen) * scale).requires_grad_()
    out, _ = attn(x, x, x)
    (out.pow(2).mean() + out.mean()).backward()
    grads = [p.grad for p in attn.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert all_finite(out, x.grad, *grads), feature_map


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e-4])
@pytest.mark.parametrize("feature_map", MAPS)
def test_denominator_is_clamped_in_every_form(feature_map, scale):
    """With v = 1 every form returns den / max(den, eps): exactly 1 wherever the raw
    denominator reaches eps, in [0, 1) below it -- never 0/0. Checked in the quadratic (short),
    chunked (8192 tokens) and recurrent (state after 8190 tokens, then single steps) forms, with
    the module's features at adversarial activation scales. With nonnegative features each
    output is a (sub-)convex combination of the values it sees: |out| <= max |v| per head."""
    attn = make_attention(feature_map)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(LONG, 1, EMBED, generator=gen) * scale
    with torch.no_grad():
        phi_q, phi_k, v = features(attn, x)
        ones = torch.ones_like(v)
        raw_den = torch.einsum("bhtf,bhtf->bht", phi_q.double(), phi_k.double().cumsum(2))
        expected = raw_den / raw_den.clamp(min=attn.eps)
        short = ops.causal_quadratic(phi_q[:, :, :300], phi_k[:, :, :300], ones[:, :, :300], attn.eps)
        chunked = ops.causal_chunked(phi_q, phi_k, ones, attn.eps)
        _, state = ops.causal_chunked(phi_q[:, :, :-2], phi_k[:, :, :-2], ones[:, :, :-2], attn.eps, return_state=True)
        steps = []
        for t in (LONG - 2, LONG - 1):
            o, state = ops.recurrent_step(phi_q[:, :, t : t + 1], phi_k[:, :, t : t + 1], ones[:, :, t : t + 1],
                                          state=state, eps=attn.eps)
            steps.append(o)
        out = ops.causal_parallel(phi_q, phi_k, v, attn.eps)
    assert all_finite(out)
    for name, got, want in [
        ("quadratic", short[..., 0], expected[:, :, :300]),
        ("chunked", chunked[..., 0], expected),
        ("recurrent", torch.cat(steps, 2)[..., 0], expected[:, :, -2:]),
    ]:
        assert all_finite(got), (feature_map, name)
        if feature_map in NONNEGATIVE_MAPS:
            assert got.min() >= 0 and got.max() <= 1 + 1e-4, (feature_map, name)
            assert (got.double() - want).abs().max() <= 1e-3, (feature_map, name)
    if feature_map in NONNEGATIVE_MAPS:
        bound = v.abs().amax(dim=(2, 3), keepdim=True)
        assert (out.abs() <= bound * (1 + 1e-4) + 1e-6).all(), feature_map


@pytest.mark.xfail(strict=True, reason=(
    "performer (modules/feature_maps.py) underflows at large activations: every key feature "
    "exp(W k - |k|^2/2) is 0 in fp32, so every denominator is 0 (clamped to eps), the "
    "attention output is identically 0 and its gradients are 0 (a dead layer). The exponent is "
    "only capped from above (MAX_KEY_EXPONENT), never shifted up. Not fixed on purpose: a per-key "
    "shift (per-row max) changes which keys the estimate weights; the exact fix, one shift for all "
    "keys of a head, must be a running maximum kept in the recurrent state (S and z rescaled when it "
    "grows), a change to every attention form (ops/, modules/decoding.py). Documented instead in the "
    "--t2r-feature-map help (config.py) and the README's option table."))
def test_performer_attention_stays_alive_at_large_activations():
    attn = make_attention("performer", training=True)
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(512, 1, EMBED, generator=gen) * 1e4).requires_grad_()
    out, _ = attn(x, x, x)
    out.pow(2).mean().backward()
    with torch.no_grad():
        phi_q, phi_k, _ = features(attn, x)
        raw_den = torch.einsum("bhtf,bhtf->bht", phi_q.double(), phi_k.double().cumsum(2))
    # softmax attention of the same input is well defined (one-hot-like); a live linear
    # attention has a positive denominator for most queries and a nonzero gradient
    assert (raw_den >= attn.eps).float().mean() > 0.5
    assert attn.q_proj.weight.grad.abs().max() > 0


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e-4])
@pytest.mark.parametrize("feature_map", MAPS)
def test_bf16_forward_finite_on_cpu(feature_map, scale):
    attn = make_attention(feature_map, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(LONG, 1, EMBED, generator=gen) * scale).to(torch.bfloat16)
    with torch.no_grad():
        out, _ = attn(x, x, x)
        state = {}
        prompt_out, _ = attn(x[:-1], x[:-1], x[:-1], incremental_state=state)  # a long prompt
        step, _ = attn(x[-1:], x[-1:], x[-1:], incremental_state=state)
    assert out.dtype == torch.bfloat16
    assert all_finite(out, prompt_out, step), feature_map


def test_bf16_close_to_fp64_for_t2r():
    """bf16 (fp32 sums inside) stays close to the fp64 result over 8192 tokens."""
    ref = make_attention("t2r", dtype=torch.float64)
    half = make_attention("t2r", dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(LONG, 1, EMBED, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        want, _ = ref(x, x, x)
        got, _ = half(x.to(torch.bfloat16), x.to(torch.bfloat16), x.to(torch.bfloat16))
    assert (got.double() - want).abs().max() < 0.1


# ------------------------------------------------------------------ property-based: parallel == recurrent
@pytest.mark.parametrize("feature_map", ["performer", "rfa", "hedgehog"])
def test_float64_features_are_float64(feature_map):
    attn = make_attention(feature_map, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, EMBED, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        parallel, _ = attn(x, x, x)
        recurrent, _ = step_by_step(attn, x)
    assert (parallel - recurrent).abs().max().item() <= TOL[torch.float64]


@st.composite
def attention_cases(draw):
    batch = draw(st.integers(1, 3))
    # mostly short (quadratic form); one in five past the cut-off (chunked form)
    if draw(st.integers(0, 4)) == 0:
        length = draw(st.integers(ops.QUADRATIC_MAX_LEN + 1, ops.QUADRATIC_MAX_LEN + 40))
    else:
        length = draw(st.integers(1, 40))
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    lengths[draw(st.integers(0, batch - 1))] = length  # fairseq pads to the longest
    return {
        "feature_map": draw(st.sampled_from(MAPS)),
        "dtype": draw(st.sampled_from([torch.float64, torch.float32])),
        "lengths": lengths,
        "length": length,
        "seed": draw(st.integers(0, 2**16)),
        "scale": draw(st.sampled_from([0.1, 1.0, 3.0])),
    }


@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=attention_cases())
def test_parallel_equals_recurrent_property(case):
    """Right-padded batches: the training forward equals token-by-token generation everywhere
    (padded positions included). float64 within 1e-8; float32 within 1e-4 of the output scale
    (rfa's signed features make outputs large where a denominator nears the clamp)."""
    dtype, length, fmap = case["dtype"], case["length"], case["feature_map"]
    attn = make_attention(fmap, dtype=dtype, seed=case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(length, len(case["lengths"]), EMBED, generator=gen, dtype=dtype) * case["scale"]
    kpm = torch.arange(length)[None, :] >= torch.tensor(case["lengths"])[:, None]
    with torch.no_grad():
        parallel, _ = attn(x, x, x, key_padding_mask=kpm if kpm.any() else None)
        recurrent, _ = step_by_step(attn, x, kpm)
    assert all_finite(parallel, recurrent)
    tol = TOL[dtype]
    scale = max(1.0, parallel.abs().max().item()) if tol >= TOL[torch.float32] else 1.0
    err = (parallel - recurrent).abs().max().item()
    assert err <= tol * scale, (fmap, dtype, case["lengths"], err)


@pytest.mark.parametrize("T", [64, 700])  # quadratic and chunked forms
def test_runs_under_autocast(T):
    """fairseq --amp trains under torch.autocast: the forms keep their own precision (fp32
    sums) instead of having every matmul re-cast, and match the fp32 module."""
    torch.manual_seed(0)
    attn = T2RAttention.from_softmax(MultiheadAttention(32, 4, self_attention=True), "t2r", 8).train()
    x = torch.randn(T, 2, 32, requires_grad=True)
    ref, _ = attn(x, x, x)
    ref.sum().backward()
    ref_grad = x.grad.clone()
    x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attn(x, x, x)
    out.float().sum().backward()
    # bf16 projections: ~1e-2 relative, as for any bf16 layer
    assert (out.float() - ref).abs().max() < 2e-2 * ref.abs().max()
    assert (x.grad - ref_grad).norm() < 5e-2 * ref_grad.norm()
