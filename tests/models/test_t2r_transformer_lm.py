"""The T2R language model as a whole: architecture twins, incremental decoding through the
recurrent form equal to the parallel forward (plain, hybrid, adaptive input/softmax), and a
state whose size does not grow."""
from argparse import Namespace

import pytest
import torch
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_NAME_REGISTRY
from utils import bit_equal, tiny_lm

from fairseq_t2r.demo.measure import state_bytes


def test_every_transformer_lm_arch_has_a_twin_with_the_same_defaults():
    bases = [a for a, m in ARCH_MODEL_NAME_REGISTRY.items() if m == "transformer_lm"]
    assert "transformer_lm_wiki103" in bases and "transformer_lm_gpt" in bases
    for arch in bases:
        twin = "t2r_" + arch
        assert ARCH_MODEL_NAME_REGISTRY[twin] == "t2r_transformer_lm"
        a, b = Namespace(), Namespace()
        ARCH_CONFIG_REGISTRY[arch](a)
        ARCH_CONFIG_REGISTRY[twin](b)
        assert {k: v for k, v in vars(b).items() if not k.startswith("t2r_")} == vars(a), arch


def incremental_logits(model, tokens):
    state = {}
    outs = []
    for t in range(tokens.size(1)):
        out, _ = model.decoder(tokens[:, : t + 1], incremental_state=state)
        outs.append(out)
    return torch.cat(outs, 1), state


ADAPTIVE = dict(
    adaptive_input=True, adaptive_input_cutoff="20,40", adaptive_softmax_cutoff="20,40",
    tie_adaptive_weights=True, tie_adaptive_proj=True, adaptive_input_factor=2, adaptive_softmax_factor=2,
    no_decoder_final_norm=True, decoder_learned_pos=True,
)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"t2r_layers": "1"}, {"t2r_feature_map": "hedgehog"}, ADAPTIVE],
    ids=["all-layers", "hybrid", "hedgehog", "adaptive-input-softmax"],
)
def test_incremental_decoding_equals_parallel_forward(overrides):
    torch.manual_seed(0)
    model = tiny_lm(vocab=60, **overrides).double().eval()
    tokens = torch.randint(4, 60, (3, 17))
    with torch.no_grad():
        parallel, _ = model.decoder(tokens)
        incremental, _ = incremental_logits(model, tokens)
    # fairseq's softmax attention computes its softmax in fp32 even in a float64 model, so
    # a hybrid model (softmax layers kept) is exact only to fp32 precision
    tol = 1e-6 if "t2r_layers" in overrides else 1e-8
    assert (parallel - incremental).abs().max().item() <= tol


def test_long_parallel_forward_through_the_fused_op_equals_incremental_decoding(monkeypatch):
    """Past QUADRATIC_MAX_LEN a t2r model's parallel forward runs ops.causal_relu_from_input; the
    recurrent decoding steps must give the same log-probs (float64)."""
    from fairseq_t2r import ops

    calls = []
    fused = ops.causal_relu_from_input
    monkeypatch.setattr(ops, "causal_relu_from_input", lambda *a, **k: calls.append(1) or fused(*a, **k))
    torch.manual_seed(0)
    model = tiny_lm(vocab=60).double().eval()
    tokens = torch.randint(4, 60, (2, ops.QUADRATIC_MAX_LEN + 72))
    with torch.no_grad():
        parallel, _ = model.decoder(tokens)
        assert len(calls) == len(model.decoder.layers)
        incremental, _ = incremental_logits(model, tokens)
    assert (parallel - incremental).abs().max().item() <= 1e-8


def test_swapped_adaptive_model_keeps_teacher_tensors():
    torch.manual_seed(0)
    teacher = tiny_lm(t2r=False, vocab=60, **ADAPTIVE)
    student = tiny_lm(vocab=60, **ADAPTIVE)
    student.load_state_dict(teacher.state_dict())
    for k, v in teacher.state_dict().items():
        assert bit_equal(student.state_dict()[k], v), k


def test_t2r_state_is_constant_size_softmax_cache_grows():
    torch.manual_seed(0)
    tokens = torch.randint(4, 50, (2, 30))
    sizes = {}
    for t2r in (True, False):
        model = tiny_lm(t2r=t2r).eval()
        with torch.no_grad():
            _, state = incremental_logits(model, tokens[:, :1])
            one = state_bytes(state)
            for t in range(2, 31):
                model.decoder(tokens[:, :t], incremental_state=state)
        sizes[t2r] = (one, state_bytes(state))
    assert sizes[True][0] == sizes[True][1]
    assert sizes[False][1] > 10 * sizes[False][0]
