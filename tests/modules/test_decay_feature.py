"""--t2r-state decay-feature (a data-independent decay per head and feature): one new file in
modules/states/ makes it an option of every tool. In float64 the module's training forward and
its token-by-token decoding (padding, beam reordering, a prompt) equal the gated reference fed
with the decays per feature; it starts as additive T2R would; an LM with it converts and
decodes as its parallel forward."""
import pytest
import torch
from fairseq.modules import MultiheadAttention
from utils import step_by_step, tiny_lm

from fairseq_t2r import ops
from fairseq_t2r.checkpoint import is_new_tensor
from fairseq_t2r.modules import T2RAttention

TOL = 1e-8


def make(seed=0, **options):
    torch.manual_seed(seed)
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8,
                                     state_options=dict(state="decay-feature", **options)).double().eval()
    with torch.no_grad():  # decays from 0.5 to 0.99 that differ per feature
        attn.state_update.decay_logit.copy_(torch.rand(2, 8, dtype=torch.float64) * 4.6)
    return attn


def reference(attn, x, kpm):
    """The gated reference with log g_{h,f} = logsigmoid(decay_logit), 0 at padded positions."""
    T, B, _ = x.shape
    phi_q, phi_k = attn._phi_queries_keys(x, x, kpm)
    log_g = torch.nn.functional.logsigmoid(attn.state_update.decay_logit)[None, :, None].repeat(B, 1, T, 1)
    if kpm is not None:
        log_g[kpm[:, None, :, None].expand_as(log_g)] = 0.0
    out = ops.causal_gated_reference(phi_q, phi_k, attn._heads(attn.v_proj(x)), log_g, eps=attn.eps)
    return attn.out_proj(attn._unheads(out))


@pytest.mark.parametrize("norm", [None, "rms"])
def test_parallel_and_steps_equal_the_reference(norm):
    attn = make(norm=norm)
    T, B = 150, 3  # past the chunk size
    x = torch.randn(T, B, 16, dtype=torch.float64)
    kpm = torch.arange(T)[None, :] >= torch.tensor([150, 90, 5])[:, None]
    kpm[1, 3] = True
    with torch.no_grad():
        parallel, _ = attn(x, x, x, key_padding_mask=kpm)
        recurrent, _ = step_by_step(attn, x, kpm)
        expected = reference(attn, x, kpm) if norm is None else parallel
    assert (parallel - expected).abs().max().item() <= TOL
    assert (parallel - recurrent).abs().max().item() <= TOL
    assert attn.state_update.norm == (norm or "sum") and attn.state_update.decay_logit.shape == (2, 8)


def test_prompt_then_beam_reordering():
    attn = make(seed=1)
    gen = torch.Generator().manual_seed(3)
    prefix, cont = torch.randn(7, 4, 16, dtype=torch.float64, generator=gen), torch.randn(6, 4, 16, dtype=torch.float64)
    order = torch.tensor([2, 2, 0, 3])
    with torch.no_grad():
        state = {}
        attn(prefix, prefix, prefix, incremental_state=state)
        attn.reorder_incremental_state(state, order)
        after, _ = step_by_step(attn, cont, state=state)
        full = torch.cat([prefix[:, order], cont], 0)
    assert (after - reference(attn, full, None)[7:]).abs().max().item() <= TOL


def test_lm_swap_adds_only_its_decays_and_decodes_as_parallel():
    torch.manual_seed(0)
    teacher = tiny_lm(t2r=False, vocab=60)
    model = tiny_lm(vocab=60, t2r_state="decay-feature", t2r_decay_init="retnet")
    model.load_state_dict(teacher.state_dict(), strict=False)
    new = [k for k in model.state_dict() if k not in teacher.state_dict()]
    assert any(k.endswith(".state_update.decay_logit") for k in new) and all(is_new_tensor(k) for k in new)
    first = model.decoder.layers[0].self_attn.state_update.decay_logit
    assert torch.allclose(torch.sigmoid(first[:, 0]), 1 - 2.0 ** (-5.0 - torch.arange(first.size(0))))
    model.double().eval()
    tokens = torch.randint(4, 60, (3, 17))
    with torch.no_grad():
        parallel, _ = model.decoder(tokens)
        state = {}
        incremental = torch.cat([model.decoder(tokens[:, : t + 1], incremental_state=state)[0]
                                 for t in range(tokens.size(1))], 1)
    assert (parallel - incremental).abs().max().item() <= 1e-8
