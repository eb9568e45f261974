"""T2RAttention's fast paths against the plain ones: folded (merged) projections in training, the
fused projection of training self-attention, and the fused one-token inference step."""
import pytest
import torch
from fairseq.modules import MultiheadAttention
from utils import step_by_step

from fairseq_t2r import ops
from fairseq_t2r.modules import FEATURE_MAPS, T2RAttention


@pytest.mark.parametrize("feature_map", ["t2r", "hedgehog"])
def test_merged_projections_in_training_give_the_same_gradients(feature_map):
    torch.manual_seed(0)
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), feature_map, 8).double().train()
    x = torch.randn(ops.QUADRATIC_MAX_LEN + 45, 2, 16, dtype=torch.float64)  # chunked form
    kpm = torch.zeros(2, x.size(0), dtype=torch.bool)
    kpm[1, 100:] = True
    grads = {}
    for merge in (True, False):
        attn.merge_projections = merge
        attn.zero_grad()
        out, _ = attn(x, x, x, key_padding_mask=kpm)
        out.pow(2).sum().backward()
        grads[merge] = {n: p.grad.clone() for n, p in attn.named_parameters()}
    assert not attn.folded.cache  # training never caches folded weights
    for n in grads[True]:
        assert (grads[True][n] - grads[False][n]).abs().max().item() <= 1e-9, n


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_training_self_attention_runs_the_fused_projection(monkeypatch, dtype):
    """A t2r self-attention longer than QUADRATIC_MAX_LEN trains through causal_relu_from_input;
    outputs and every gradient (input included) equal those of the same merged weights through
    the generic path (float64 and bf16) and of the unmerged module (float64; in bf16 the random
    module's gradients are too ill-conditioned -- denominators at the eps clamp -- to compare)."""
    calls = []
    fused = ops.causal_relu_from_input
    monkeypatch.setattr(ops, "causal_relu_from_input", lambda *a, **k: calls.append(1) or fused(*a, **k))
    torch.manual_seed(0)
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8).to(dtype).train()
    x0 = torch.randn(ops.QUADRATIC_MAX_LEN + 61, 2, 16).to(dtype)
    kpm = torch.zeros(2, x0.size(0), dtype=torch.bool)
    kpm[0, 150:] = True
    g = torch.randn(x0.shape).to(dtype)

    def run(merge, allow_fused):
        attn.merge_projections = merge
        if not allow_fused:
            attn._fused_from_input = lambda *a: False  # an instance attribute hides the method
        attn.zero_grad()
        x = x0.clone().requires_grad_()
        out, _ = attn(x, x, x, key_padding_mask=kpm)
        out.backward(g)
        attn.__dict__.pop("_fused_from_input", None)
        return [out, x.grad] + [p.grad for p in attn.parameters()]

    got = run(True, True)
    assert len(calls) == 1
    others = [run(True, False)] + ([run(False, True)] if dtype == torch.float64 else [])
    assert len(calls) == 1  # neither the generic merged path nor the unmerged module fuses
    tol = 1e-9 if dtype == torch.float64 else 2e-2
    for want in others:
        for a, b in zip(got, want):
            assert a.dtype == dtype
            assert (a.double() - b.double()).abs().max().item() <= tol * max(1.0, b.double().abs().max().item())


def test_triton_policy_keeps_relu_layers_on_the_fused_entry(monkeypatch):
    """Where dispatch picks the Triton kernels (CUDA, FAIRSEQ_T2R_TRITON=1), relu self-attention
    still calls causal_relu_from_input (which then runs them with relu on load); fla does not."""
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8).train()
    x = torch.randn(ops.QUADRATIC_MAX_LEN + 1, 1, 16)
    asked = []
    for form, fused in (("triton", True), ("chunked", True), ("fla", False), ("quadratic", False)):
        monkeypatch.setattr(ops, "parallel_form", lambda *a, form=form, **k: asked.append(k) or form)
        assert attn._fused_from_input(x, x, x) is fused, form
    assert asked[0] == {"dtype": torch.float32}


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
def test_fused_step_same_with_one_or_three_input_tensors(feature_map):
    """fairseq passes one tensor as query, key and value (one fused matmul); the tests' step_by_step
    passes three (three matmuls): both equal the parallel form, with padding."""
    torch.manual_seed(0)
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), feature_map, 8).double().eval()
    x = torch.randn(11, 3, 16, dtype=torch.float64)
    kpm = torch.arange(11)[None, :] >= torch.tensor([11, 6, 2])[:, None]
    with torch.no_grad():
        parallel, _ = attn(x, x, x, key_padding_mask=kpm)
        three, _ = step_by_step(attn, x, kpm)
        state, outs = {}, []
        for t in range(11):
            xt = x[t : t + 1]
            outs.append(attn(xt, xt, xt, key_padding_mask=kpm[:, t : t + 1], incremental_state=state)[0])
        one = torch.cat(outs)
    assert (three - parallel).abs().max().item() <= 1e-8
    assert (one - parallel).abs().max().item() <= 1e-8


