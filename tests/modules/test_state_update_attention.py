"""T2RAttention with a non-additive state (--t2r-state decay / gate / delta / gated-delta,
--t2r-norm rms): the
training forward equals token-by-token decoding in float64 (padding, beam reordering, a prompt
then steps, the chunked length), the near-one initialisations start close to additive T2R, the
fused relu op serves the paper's state only, gradients reach the new tensors, and combinations
that make no sense are refused in one line."""
import pytest
import torch
from fairseq.modules import MultiheadAttention
from utils import step_by_step

from fairseq_t2r import ops
from fairseq_t2r.modules import T2RAttention

STATES = {
    "additive-rms": dict(state="additive", norm="rms"),
    "decay": dict(state="decay"),
    "decay-retnet-rms": dict(state="decay", decay_init="retnet", decay_fixed=True, norm="rms"),
    "gate": dict(state="gate"),
    "gate-feature-rms": dict(state="gate", gate_shape="feature", norm="rms"),
    "gate-key": dict(state="gate", gate_source="key"),
    "gate-key-feature": dict(state="gate", gate_source="key", gate_shape="feature"),
    "delta": dict(state="delta", norm="rms"),
    "gated-delta": dict(state="gated-delta", norm="rms"),
    "gated-delta-key": dict(state="gated-delta", gate_source="key", norm="rms"),
}
TOL = 1e-8


def make(options, feature_map="t2r", seed=0, perturb=True, embed_dim=16, heads=2, feature_dim=8):
    torch.manual_seed(seed)
    attn = T2RAttention.from_softmax(MultiheadAttention(embed_dim, heads, self_attention=True), feature_map,
                                     feature_dim, state_options=options).double().eval()
    if perturb:  # move the new tensors off their (near-additive) initialisation: data-dependent gates
        with torch.no_grad():
            for p in attn.state_update.parameters():
                p.add_(torch.randn_like(p))
    return attn


@pytest.mark.parametrize("feature_map", ["t2r", "elu"])
@pytest.mark.parametrize("name", sorted(STATES))
def test_parallel_equals_recurrent_with_padding(name, feature_map):
    """150 tokens (past the chunk size), right padding and one padded token mid-sequence."""
    attn = make(STATES[name], feature_map)
    T, B = 150, 3
    x = torch.randn(T, B, 16, dtype=torch.float64)
    kpm = torch.arange(T)[None, :] >= torch.tensor([150, 90, 5])[:, None]
    kpm[1, 3] = True
    with torch.no_grad():
        parallel, _ = attn(x, x, x, key_padding_mask=kpm)
        recurrent, _ = step_by_step(attn, x, kpm)
        short, _ = attn(x[:5, 2:3], x[:5, 2:3], x[:5, 2:3])
    assert (parallel - recurrent).abs().max().item() <= TOL
    assert (short[:, 0] - parallel[:5, 2]).abs().max().item() <= TOL


@pytest.mark.parametrize("name", sorted(STATES))
def test_recurrent_after_beam_reordering_and_prompt(name):
    attn = make(STATES[name], seed=1)
    B, m, rest = 4, 7, 6
    gen = torch.Generator().manual_seed(3)
    prefix = torch.randn(m, B, 16, dtype=torch.float64, generator=gen)
    cont = torch.randn(rest, B, 16, dtype=torch.float64, generator=gen)
    new_order = torch.randint(0, B, (B,), generator=gen)
    with torch.no_grad():
        state = {}
        attn(prefix, prefix, prefix, incremental_state=state)  # a prompt: the parallel form continuing
        attn.reorder_incremental_state(state, new_order)
        after, _ = step_by_step(attn, cont, state=state)
        full = torch.cat([prefix[:, new_order], cont], 0)
        reference, _ = attn(full, full, full)
        assert state and all(v.shape[-2:] == (8, 9) for buf in state.values() for k, v in buf.items() if k == "Sz")
        # a delta rule keeps S alone (no z), of a constant size
        delta = STATES[name].get("state") in ("delta", "gated-delta")
        assert all((k == "S") == delta for buf in state.values() for k in buf)
        assert all(v.shape == (B, 2, 8, 8) for buf in state.values() for k, v in buf.items() if k == "S")
    assert (after - reference[m:]).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["decay", "gate"])
def test_near_one_initialisation_starts_close_to_additive(name):
    """Same teacher tensors and feature map: at the swap the decay / projection gate is
    1 - 2^-12, so over 100 tokens the output stays within ~2% of additive T2R's."""
    additive = make({}, perturb=False)
    other = make(STATES[name], perturb=False)
    x = torch.randn(100, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        a, _ = additive(x, x, x)
        b, _ = other(x, x, x)
    assert 0 < (a - b).abs().max().item() <= 0.02 * a.abs().max().item()


@pytest.mark.parametrize("name", ["delta", "gated-delta"])
def test_small_beta_initialisation_starts_close_to_additive(name):
    """beta = 2^-8 at the swap: over 100 tokens the RMS-normalised output (rms 1 per position)
    differs from the additive state's with the same (L2-normalised) features, the limit
    beta -> 0, by ~2% rms on average (measured 0.020 and 0.022)."""
    attn = make(STATES[name], perturb=False)
    x = torch.randn(100, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        phi_q, phi_k = attn._phi_queries_keys(x, x, None)
        v = attn._heads(attn.v_proj(x))
        out = attn.state_update.parallel(phi_q, phi_k, v, x, attn.k_proj, None, attn.eps)
        q, k = ops.l2_normalize(phi_q), ops.l2_normalize(phi_k)
        additive = attn.state_update.finish(torch.matmul(torch.matmul(q, k.transpose(-1, -2)).tril(), v))
    assert 0 < (out - additive).pow(2).mean(-1).sqrt().mean().item() <= 0.04


def test_fused_relu_op_only_for_the_paper_state(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fused additive op used for another state")

    attn = make(STATES["decay"]).train()
    monkeypatch.setattr(ops, "causal_relu_from_input", refuse)
    x = torch.randn(ops.QUADRATIC_MAX_LEN + 50, 2, 16, dtype=torch.float64, requires_grad=True)
    out, _ = attn(x, x, x)
    out.pow(2).sum().backward()
    assert attn.state_update.decay_logit.grad is not None and attn.state_update.decay_logit.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["gate-feature-rms", "additive-rms", "gated-delta"])
def test_gradients_reach_the_new_tensors(name):
    attn = make(STATES[name]).train()
    x = torch.randn(40, 2, 16, dtype=torch.float64, requires_grad=True)
    out, _ = attn(x, x, x)
    out.pow(2).sum().backward()
    for n, p in attn.state_update.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_paper_state_adds_no_tensor():
    attn = make({}, perturb=False)
    assert not [k for k in attn.state_dict() if ".state_update." in "." + k]


@pytest.mark.parametrize("options, match", [
    (dict(state="delta", norm="sum"), "--t2r-norm rms"),
    (dict(state="gated-delta", norm="sum"), "--t2r-norm rms"),
    (dict(state="gated-delta", norm="rms", gate_shape="feature"), "one gate per head"),
    (dict(state="gated-delta", norm="rms", gate_temperature=-1.0), "must be positive"),
    (dict(state="gate", gate_source="key", gate_shape="feature"), "head_dim divisible"),
    (dict(state="gate", gate_temperature=0.0), "must be positive"),
    (dict(state="forget"), "choose the state"),
])
def test_bad_combinations_refused_in_one_line(options, match):
    with pytest.raises(ValueError, match=match) as e:
        make(options, feature_dim=6 if options.get("gate_shape") == "feature" else 8)
    assert "\n" not in str(e.value)


def test_a_state_implies_its_norm():
    """--t2r-state delta alone implies --t2r-norm rms (its only norm); the others imply sum."""
    assert make(dict(state="delta")).state_update.norm == "rms"
    assert make(dict(state="gated-delta")).state_update.norm == "rms"
    assert make(dict(state="decay")).state_update.norm == "sum"


@pytest.mark.parametrize("options", [dict(state="decay"), dict(state="delta", norm="rms")], ids=["decay", "delta"])
def test_cross_attention_keeps_its_summary(options):
    mha = MultiheadAttention(16, 2, encoder_decoder_attention=True, kdim=16, vdim=16)
    with pytest.raises(ValueError, match="self-attention only"):
        T2RAttention.from_softmax(mha, "t2r", 8, state_options=options)


@pytest.mark.parametrize("name", ["decay", "gate", "gate-key-feature"])
def test_transfer_weights_of_a_gated_state_are_its_attention(name):
    """Attention transfer's linear weights of a decayed/gated state (what its xent term compares):
    the token-by-token reference applied to one-hot values, rows summing to 1, and, applied to v,
    the module's own output (float64, with padding, past the chunk size)."""
    from fairseq_t2r.modules import transfer

    attn = make(STATES[name], seed=2)
    T, B = 70, 2
    x = torch.randn(T, B, 16, dtype=torch.float64)
    kpm = torch.arange(T)[None, :] >= torch.tensor([70, 40])[:, None]
    with torch.no_grad():
        q = attn._heads(attn.q_proj(x) * attn.scaling)
        phi_q = attn.feature_map.forward_queries(q)
        phi_k = ops.mask_padded_keys(attn.feature_map.forward_keys(attn._heads(attn.k_proj(x))), kpm)
        w = transfer.linear_weights(attn, phi_q, phi_k, x, kpm)
        log_g = attn.state_update.log_gates(x, attn.k_proj, kpm)
        eye = torch.eye(T, dtype=torch.float64).expand(B, attn.num_heads, T, T)
        expected = ops.causal_gated_reference(phi_q, phi_k, eye, log_g, eps=attn.eps)
        out, _ = attn(x, x, x, key_padding_mask=kpm)
        mixed = torch.matmul(w, attn._heads(attn.v_proj(x)))
    assert (w - expected).abs().max().item() <= TOL
    assert w.triu(1).abs().max().item() == 0.0  # no query sees a later key
    assert (w[0].sum(-1) - 1).abs().max().item() <= TOL and (w[1, :, :40].sum(-1) - 1).abs().max().item() <= TOL
    assert (attn.out_proj(attn._unheads(mixed)) - out)[:40].abs().max().item() <= TOL
    additive = ops.linear_attention_weights(phi_q, phi_k, causal=True, eps=attn.eps)
    assert (w - additive).abs().max().item() > 1e-3  # the gates matter: not the additive weights


def test_transfer_xent_refused_for_states_whose_weights_are_not_distributions():
    from fairseq_t2r.modules import transfer

    assert transfer.weights_are_distributions(make(STATES["gate"]))
    for name in ("delta", "gated-delta", "additive-rms"):
        assert not transfer.weights_are_distributions(make(STATES[name]))
