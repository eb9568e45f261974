"""Faithfulness of a converted model to its teacher (fairseq_t2r/demo/faithfulness.py): top-1
agreement and KL on hand-made distributions with known answers, on the shared tiny LM teacher
(tool_server.shared_lm) against itself and against its swapped T2R twin, and BLEU between two
fake fairseq-generate logs."""
import json
import math

import pytest
import torch

from fairseq_t2r.convert import convert
from fairseq_t2r.demo.faithfulness import agreement_and_kl, lm_faithfulness, main, mt_faithfulness
from fairseq_t2r.demo.measure import translation_scores


def logs(*rows):
    return torch.tensor(rows, dtype=torch.float64).log()


# ------------------------------------------------------------------------ agreement and KL by hand
def test_a_model_against_itself_agrees_everywhere_with_zero_kl():
    lp = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    assert agreement_and_kl(lp, lp.clone()) == {"top1_agreement": 1.0, "kl": 0.0, "tokens": 15}


def test_two_positions_three_words_by_hand():
    teacher = logs([0.5, 0.25, 0.25], [0.2, 0.7, 0.1])
    model = logs([0.25, 0.5, 0.25], [0.1, 0.6, 0.3])  # top-1 differs at the first position only
    kl_first = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5) + 0.25 * math.log(1.0)
    kl_second = 0.2 * math.log(0.2 / 0.1) + 0.7 * math.log(0.7 / 0.6) + 0.1 * math.log(0.1 / 0.3)
    r = agreement_and_kl(teacher, model)
    assert r["top1_agreement"] == 0.5 and r["tokens"] == 2
    assert r["kl"] == pytest.approx((kl_first + kl_second) / 2, abs=1e-12)
    # float32 inputs: the same within float32 rounding (KL itself is summed in float64)
    r32 = agreement_and_kl(teacher.float(), model.float())
    assert r32["top1_agreement"] == 0.5 and r32["kl"] == pytest.approx(r["kl"], abs=1e-6)


def test_the_mask_excludes_positions():
    teacher = logs([0.5, 0.25, 0.25], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1])
    model = logs([0.25, 0.5, 0.25], [0.01, 0.01, 0.98], [0.1, 0.6, 0.3])
    mask = torch.tensor([True, False, True])
    expected = agreement_and_kl(teacher[[0, 2]], model[[0, 2]])
    assert agreement_and_kl(teacher, model, mask) == expected
    # leading dimensions (batch, time) with a mask of that shape
    assert agreement_and_kl(teacher[None], model[None], mask[None]) == expected
    assert agreement_and_kl(teacher, model)["tokens"] == 3


def test_words_the_teacher_gives_no_mass_add_nothing():
    teacher = logs([1.0, 0.0, 0.0], [0.5, 0.5, 0.0])  # log 0 = -inf
    model = logs([0.5, 0.5, 0.0], [0.5, 0.25, 0.25])  # -inf where the teacher also has -inf
    r = agreement_and_kl(teacher, model)
    expected = (math.log(1.0 / 0.5) + 0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(0.5 / 0.25)) / 2
    assert math.isfinite(r["kl"]) and r["kl"] == pytest.approx(expected, abs=1e-12)


def test_one_hot_teacher_against_a_uniform_model_is_log_v():
    v = 7
    teacher = torch.full((1, v), float("-inf"), dtype=torch.float64)
    teacher[0, 3] = 0.0
    uniform = torch.full((1, v), -math.log(v), dtype=torch.float64)
    r = agreement_and_kl(teacher, uniform)
    assert r["kl"] == pytest.approx(math.log(v), abs=1e-12) and r["tokens"] == 1


def test_bad_shapes_and_an_empty_mask_are_refused():
    lp = logs([0.5, 0.5])
    with pytest.raises(ValueError, match="differ in shape"):
        agreement_and_kl(lp, logs([0.5, 0.25, 0.25]))
    with pytest.raises(ValueError, match="mask"):
        agreement_and_kl(lp, lp, torch.tensor([True, True]))
    with pytest.raises(ValueError, match="no position"):
        agreement_and_kl(lp, lp, torch.tensor([False]))


# ------------------------------------------------------------------------ language model checkpoints
def test_lm_teacher_against_itself_and_against_its_swapped_twin(tiny_lm_teacher, tmp_path, capsys):
    teacher, data = tiny_lm_teacher["teacher"], tiny_lm_teacher["data"]
    swapped = tmp_path / "swapped.pt"
    convert(teacher, swapped, {"t2r_feature_map": "t2r", "t2r_feature_dim": 8, "t2r_layers": None}, seed=1)
    # every word of test.txt and each line's end-of-sentence is a target once
    with open(f"{tiny_lm_teacher['root']}/test.txt") as f:
        targets = sum(len(line.split()) + 1 for line in f)

    same = lm_faithfulness(teacher, teacher, data, tokens_per_sample=64)
    assert same["top1_agreement"] == 1.0 and abs(same["kl"]) < 1e-9 and same["tokens"] == targets

    out = tmp_path / "lm.json"
    r = main(["lm", teacher, str(swapped), data, "--tokens-per-sample", "64", "--out", str(out)])
    assert r["top1_agreement"] < 1.0 and r["kl"] > 0 and r["tokens"] == targets
    assert json.loads(out.read_text()) == r
    assert capsys.readouterr().out.strip().endswith(f"nats over {targets} tokens")


# ------------------------------------------------------------------------ translation logs
def generate_log(path, hyps):
    """A fairseq-generate log: S/T/H/D/P lines per sentence, in the order batches finish."""
    lines = ["2024-01-01 | INFO | fairseq_cli.generate | loading model"]
    for i, text in reversed(list(enumerate(hyps))):
        lines += [f"S-{i}\tsource {i}", f"T-{i}\treference {i}", f"H-{i}\t-0.5\t{text} @@",
                  f"D-{i}\t-0.5\t{text}", f"P-{i}\t-0.1 -0.2"]
    lines.append("Generate test with beam=4: BLEU4 = 10.00")
    path.write_text("\n".join(lines) + "\n")
    return path


SENTENCES = ["the cat sat on the mat today", "a dog ran across the green field", "we went home after dinner"]


def test_mt_identical_translations_score_100(tmp_path, capsys):
    teacher = generate_log(tmp_path / "teacher.log", SENTENCES)
    model = generate_log(tmp_path / "model.log", SENTENCES)
    assert mt_faithfulness(model, teacher) == {"bleu_vs_teacher": 100.0, "sentences": 3}
    other = generate_log(tmp_path / "other.log", [SENTENCES[0], "a cat walked over the red field", SENTENCES[2]])
    out = tmp_path / "mt.json"
    r = main(["mt", str(other), str(teacher), "--out", str(out)])
    assert 0 < r["bleu_vs_teacher"] < 100 and r["sentences"] == 3
    assert json.loads(out.read_text()) == r and "BLEU" in capsys.readouterr().out


def test_mt_different_sentence_ids_are_refused_naming_both_logs(tmp_path):
    teacher = generate_log(tmp_path / "teacher.log", SENTENCES)
    model = generate_log(tmp_path / "model.log", SENTENCES[:2])
    with pytest.raises(RuntimeError, match="model.log.*teacher.log"):
        mt_faithfulness(model, teacher)
    with pytest.raises(RuntimeError, match="missing.log"):
        mt_faithfulness(tmp_path / "missing.log", tmp_path / "missing.log")


def test_translation_scores_read_the_same_hypotheses(tmp_path):
    # measure.translation_scores and mt_faithfulness share measure.hypotheses
    refs = tmp_path / "test.raw.de"
    refs.write_text("\n".join(SENTENCES) + "\n")
    scores = translation_scores(generate_log(tmp_path / "model.log", SENTENCES), refs)
    assert scores == {"bleu": 100.0, "chrf": 100.0, "sentences": 3}
