"""t2r-convert --t2r-keep-softmax N --t2r-select RULE: every rule gives a valid, deterministic choice;
the measured rules find the layer whose conversion provably costs nothing (its values are zero, so
softmax and linear attention both output exactly 0); bad requests stop with one line."""
import os

import pytest
import torch
from tool_server import tools
from utils import load_checkpoint, tiny_lm

from fairseq_t2r import layer_select
from fairseq_t2r.errors import T2RUserError


def test_positional_rules_are_valid_and_deterministic():
    for layers in range(2, 9):
        for keep in range(1, layers):
            for rule in ("last", "even"):
                kept = layer_select.by_position(rule, keep, layers)
                assert kept == layer_select.by_position(rule, keep, layers)
                assert len(kept) == keep and kept == sorted(set(kept)) and all(0 <= i < layers for i in kept)
    assert layer_select.by_position("last", 1, 4) == [3]
    assert layer_select.by_position("even", 1, 4) == [2]  # centred: not `last` again
    assert layer_select.by_position("even", 2, 4) == [1, 3]
    assert layer_select.by_position("even", 2, 6) == [1, 4]


def test_scores_rank_highest_kept_ties_to_the_later_layer():
    assert layer_select.by_score({0: 0.5, 1: 0.1, 2: 0.5, 3: 0.2}, 1) == [2]
    assert layer_select.by_score({0: 0.5, 1: 0.1, 2: 0.5, 3: 0.2}, 3) == [0, 2, 3]


@pytest.mark.parametrize("request_, needle", [
    ((0, "last", None, 4, False), "--t2r-keep-softmax 0: the decoder has 4 layers"),
    ((4, "even", None, 4, False), "keep between 1 and 3"),
    ((1, "kl", None, 4, False), "--transfer-data DATA_BIN --transfer-updates N"),
    ((1, "transfer", None, 4, False), "--transfer-data DATA_BIN --transfer-updates N"),
    ((1, "last", "0,1", 4, False), "leave --t2r-layers out"),
    ((None, "kl", None, 4, True), "give N too"),
])
def test_bad_requests_are_refused_in_one_line(request_, needle):
    with pytest.raises(T2RUserError) as err:
        layer_select.check_request(*request_)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- measured rules
def constructed(layers=3, free=1):
    """A tiny T2R LM (random feature maps, as at the swap) whose layer ``free`` has zero values, and one
    left-padded batch: converting ``free`` changes nothing, converting any other layer does."""
    torch.manual_seed(0)
    model = tiny_lm(t2r=True, decoder_layers=layers)
    v = model.decoder.layers[free].self_attn.v_proj
    v.weight.data.zero_()
    v.bias.data.zero_()
    tokens = torch.randint(4, 50, (3, 12))
    tokens[1, :4] = 1  # pad (Dictionary().pad())
    target = torch.randint(4, 50, (3, 12)).masked_fill(tokens.eq(1), 1)
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": tokens.ne(1).sum(1)}, "target": target}
    return model, [sample]


@pytest.mark.parametrize("rule", ["kl", "transfer"])
def test_measured_rule_finds_the_free_layer(rule):
    model, batches = constructed()
    scores = layer_select.layer_scores(model, batches, rule, pad=1)
    assert sorted(scores) == [0, 1, 2]
    assert scores[1] == 0.0, scores
    assert min(scores[0], scores[2]) > 1e-4, scores
    assert layer_select.by_score(scores, 2) == [0, 2]  # keep the two that cost, convert the free one
    assert layer_select.layer_scores(model, batches, rule, pad=1) == scores  # deterministic


def test_kl_is_measured_against_the_softmax_teacher():
    """With every layer teacher-forced the T2R model is its softmax teacher (same weights)."""
    model, batches = constructed()
    teacher = tiny_lm(t2r=False, decoder_layers=3)
    teacher.load_state_dict({k: v for k, v in model.state_dict().items() if ".feature_map." not in k})
    teacher.eval()
    sample = batches[0]
    with torch.no_grad():
        want = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True).double()
        got = layer_select._lprobs(model.eval(), sample, None)
    assert torch.allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------- t2r-convert
@pytest.fixture(scope="module")
def free_layer_teacher(tiny_lm_teacher, tmp_path_factory):
    """The shared 2-layer teacher with layer 1's values zeroed: kl and transfer must keep layer 0."""
    root = tmp_path_factory.mktemp("select")
    state = load_checkpoint(tiny_lm_teacher["teacher"])
    for name in ("weight", "bias"):
        state["model"][f"decoder.layers.1.self_attn.v_proj.{name}"].zero_()
    path = root / "teacher_free1.pt"
    torch.save(state, path)
    return root, path


def test_convert_keeps_the_costly_layer_and_records_the_choice(tiny_lm_teacher, free_layer_teacher):
    root, teacher = free_layer_teacher
    out = root / "kl.pt"
    res = tools().run("fairseq_t2r.convert", teacher, out, "--t2r-feature-dim", "8", "--t2r-keep-softmax", "1",
                      "--t2r-select", "kl", "--t2r-select-batches", "2", "--transfer-data", tiny_lm_teacher["data"],
                      "--transfer-updates", "2", cwd=root, threads=1)
    said = [line for line in res.output.splitlines() if "--t2r-select kl:" in line]
    assert len(said) == 1, res.output[-3000:]
    assert "softmax kept in decoder layer(s) 0, converted 1 (--t2r-layers 1)" in said[0]
    assert "l0 " in said[0] and "l1 0 " in said[0], said[0]
    state = load_checkpoint(out)
    assert state["cfg"]["model"]["t2r_layers"] == "1"
    assert state["t2r_select"]["kept"] == [0] and state["t2r_select"]["scores"][1] == 0.0
    new = [k for k in state["model"] if ".feature_map." in k]
    assert new and all(k.startswith("decoder.layers.1.") for k in new)
    assert "t2r_attention_transfer" in state  # the converted layer's map is the fitted one
    assert not [p for p in os.listdir(root) if p.startswith(".kl.pt")]  # no scratch left


def test_convert_by_position_and_bad_rule(tiny_lm_teacher, free_layer_teacher):
    root, teacher = free_layer_teacher
    res = tools().run("fairseq_t2r.convert", teacher, root / "even.pt", "--t2r-feature-dim", "8",
                      "--t2r-keep-softmax", "1", "--t2r-select", "even", cwd=root, threads=1)
    assert "--t2r-select even: softmax kept in decoder layer(s) 1, converted 0" in res.output
    assert load_checkpoint(root / "even.pt")["cfg"]["model"]["t2r_layers"] == "0"
    bad = tools().run("fairseq_t2r.convert", teacher, root / "bad.pt", "--t2r-keep-softmax", "1",
                      "--t2r-select", "best", cwd=root, threads=1, check=False)
    assert bad.returncode == 2 and "argument --t2r-select: invalid choice: 'best'" in bad.stderr.strip().splitlines()[-1]
    n = tools().run("fairseq_t2r.convert", teacher, root / "bad.pt", "--t2r-keep-softmax", "2", cwd=root,
                    threads=1, check=False)
    assert n.returncode != 0 and len(n.error_lines()) == 1 and "keep between 1 and 1" in n.error_lines()[0]
    assert not (root / "bad.pt").exists()
