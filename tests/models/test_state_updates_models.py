"""Models with a non-additive state (--t2r-state decay / gate / delta / gated-delta, --t2r-norm
rms): the swap copies
every teacher tensor bit for bit and adds only feature maps and state-update tensors; LM and
translation decoding equal the parallel forward (beam search rescoring included); t2r-convert
writes a checkpoint that loads; attention transfer runs; bad combinations stop with one line."""
import pytest
import torch
from test_conversion import OPTIONS, save_softmax_checkpoint
from test_t2r_transformer import build, converted, data_dir, decoding_gap_and_beam, rescoring_max_diff  # noqa: F401
from test_t2r_transformer_lm import incremental_logits
from utils import tiny_lm

from fairseq_t2r.checkpoint import is_new_tensor
from fairseq_t2r.convert import convert
from fairseq_t2r.errors import T2RUserError

LM_STATES = {
    "decay": dict(t2r_state="decay"),
    "gate-feature-rms": dict(t2r_state="gate", t2r_gate_shape="feature", t2r_norm="rms"),
    "gate-key": dict(t2r_state="gate", t2r_gate_source="key"),
    "delta": dict(t2r_state="delta", t2r_norm="rms"),
    "gated-delta": dict(t2r_state="gated-delta", t2r_norm="rms"),
}


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".state_update." in n:
                p.add_(torch.randn_like(p))


@pytest.mark.parametrize("name", sorted(LM_STATES))
def test_lm_swap_exact_and_decoding_equals_parallel(name):
    torch.manual_seed(0)
    teacher = tiny_lm(t2r=False, vocab=60)
    model = tiny_lm(vocab=60, **LM_STATES[name])
    model.load_state_dict(teacher.state_dict(), strict=False)
    got = model.state_dict()
    assert all(torch.equal(got[k], t) for k, t in teacher.state_dict().items())
    new = [k for k in got if k not in teacher.state_dict()]
    assert all(is_new_tensor(k) for k in new)
    # Liger's gate from the key projection adds no tensor; the others do
    assert any(".state_update." in k for k in new) == (name != "gate-key")
    perturb(model)
    model.double().eval()
    tokens = torch.randint(4, 60, (3, 17))
    with torch.no_grad():
        parallel, _ = model.decoder(tokens)
        incremental, _ = incremental_logits(model, tokens)
    assert (parallel - incremental).abs().max().item() <= 1e-8


@pytest.mark.parametrize("overrides, match", [
    (dict(t2r_state="delta", t2r_norm="sum"), "--t2r-norm rms"),
    (dict(t2r_state="gated-delta", t2r_norm="rms", t2r_gate_shape="feature"), "one gate per head"),
])
def test_lm_bad_state_is_one_line(overrides, match):
    with pytest.raises(T2RUserError, match=match) as e:
        tiny_lm(**overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("extra", [
    ("--t2r-state", "decay", "--t2r-decay-init", "retnet"),
    ("--t2r-state", "gate", "--t2r-gate-shape", "feature", "--t2r-norm", "rms"),
    ("--t2r-state", "delta", "--t2r-norm", "rms"),
    ("--t2r-state", "gated-delta", "--t2r-gate-source", "key", "--t2r-norm", "rms"),
], ids=["decay-retnet", "gate-feature-rms", "delta", "gated-delta-key"])
def test_translation_decoding_and_beam_search(data_dir, extra):  # noqa: F811
    _, task, model = build(data_dir, *extra, "--t2r-cross", "linear")  # the state update is self-attention's only
    cross = [m for n, m in converted(model).items() if "encoder_attn" in n]
    assert len(cross) == 2 and all(m.state_update.is_paper for m in cross)
    perturb(model)
    d = task.target_dictionary
    gap, src, src_lengths, hypos = decoding_gap_and_beam(model, d, beam_dtype=torch.float32)
    assert gap <= 1e-8
    assert all(len(nbest) == 4 for nbest in hypos)
    assert rescoring_max_diff(model, d, src, src_lengths, hypos) <= 1e-4


@pytest.mark.parametrize("state, new_tensor", [("decay", "decay_logit"), ("delta", "beta_proj.weight")])
def test_convert_with_a_state_writes_a_checkpoint_that_loads(tmp_path, state, new_tensor):
    src, out = tmp_path / "soft.pt", tmp_path / "t2r.pt"
    teacher = save_softmax_checkpoint(src, prehydra=False)
    _, _, added = convert(str(src), str(out), {**OPTIONS, "t2r_state": state, "t2r_norm": "rms"})
    assert any(k.endswith(".state_update." + new_tensor) for k in added)
    assert any(k.endswith(".state_update.norm_weight") for k in added)
    state_dict = torch.load(out, weights_only=False)
    assert all(torch.equal(state_dict["model"][k], t) for k, t in teacher.items())
    assert state_dict["cfg"]["model"]["t2r_state"] == state
    model = tiny_lm(t2r_state=state, t2r_norm="rms")
    model.load_state_dict(state_dict["model"])


def test_attention_transfer_runs_with_a_delta_model():
    """One criterion step in float64: finite per-layer losses, gradients on the new tensors only."""
    from utils import FakeTask

    from fairseq_t2r import patches
    from fairseq_t2r.criterions.attention_transfer import AttentionTransferCriterion

    torch.manual_seed(0)
    model = tiny_lm(t2r_state="gated-delta", t2r_norm="rms").double()
    task = FakeTask(model.decoder.dictionary)
    patches.remember(task, model)
    crit = AttentionTransferCriterion(task, 0.0)
    tokens = torch.randint(4, 50, (2, 40))
    tokens[1, 30:] = task.target_dictionary.pad()
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": torch.tensor([40, 30])},
              "target": tokens, "ntokens": int(tokens.ne(1).sum())}
    loss, n, log = crit(model.train(), sample)
    loss.backward()
    assert n == 70 and torch.isfinite(loss) and {"transfer_l0", "transfer_l1"} <= set(log)
    grads = {k for k, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(is_new_tensor(k) for k in grads)
    assert any(".state_update.beta_proj." in k for k in grads)
