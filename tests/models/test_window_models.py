"""--t2r-window in whole models, for every registered state: LM and translation decoding equal the
parallel forward (float64, 1e-8; beam search rescoring as sentences finish); and through the stock
tools on the shared tiny teacher: t2r-convert --t2r-window writes the window's tensors and W,
fairseq-train's parse from it keeps W without the flag, fairseq-eval-lm scores it with both branches and
with the window alone (--model-overrides), fairseq-generate decodes it with a beam."""
import re

import pytest
import torch
from fairseq import options
from test_t2r_transformer import build, data_dir, decoding_gap_and_beam, rescoring_max_diff  # noqa: F401
from test_t2r_transformer_lm import incremental_logits
from tool_server import tools
from utils import USER_DIR, load_checkpoint, tiny_lm

from fairseq_t2r.checkpoint import is_new_tensor
from fairseq_t2r.errors import T2RUserError
from fairseq_t2r.modules.states import state_names


def perturb(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".state_update." in n or ".window." in n:
                p.add_(torch.randn_like(p))


@pytest.mark.parametrize("state", state_names())
def test_lm_decoding_equals_parallel(state):
    torch.manual_seed(0)
    teacher = tiny_lm(t2r=False, vocab=60)
    model = tiny_lm(vocab=60, t2r_state=state, t2r_window=4)
    model.load_state_dict(teacher.state_dict(), strict=False)
    new = [k for k in model.state_dict() if k not in teacher.state_dict()]
    assert all(is_new_tensor(k) for k in new) and any(".window." in k for k in new)
    perturb(model)
    model.double().eval()
    tokens = torch.randint(4, 60, (3, 17))
    with torch.no_grad():
        parallel, _ = model.decoder(tokens)
        incremental, _ = incremental_logits(model, tokens)
    assert (parallel - incremental).abs().max().item() <= 1e-8


@pytest.mark.parametrize("state", state_names())
def test_translation_decoding_and_beam_search(data_dir, state):  # noqa: F811
    _, task, model = build(data_dir, "--t2r-state", state, "--t2r-window", "3")
    perturb(model)
    d = task.target_dictionary
    gap, src, src_lengths, hypos = decoding_gap_and_beam(model, d)
    assert gap <= 1e-8
    assert all(len(nbest) == 4 for nbest in hypos)
    assert max(len(h["tokens"]) for nbest in hypos for h in nbest) > 3  # past the window
    # the generator keeps its scores in float32 (parallel == incremental at 1e-8 is checked above)
    assert rescoring_max_diff(model, d, src, src_lengths, hypos) <= 1e-5


def _ppl(res):
    m = re.search(r"Perplexity: ([\d.]+)", res.output)
    assert m, res.output[-2000:]
    return float(m.group(1))


def test_convert_reload_eval_and_generate_with_a_window(tiny_lm_teacher, tmp_path):
    lm, server = tiny_lm_teacher, tools()
    converted = tmp_path / "win.pt"
    server.run("fairseq_t2r.convert", lm["teacher"], converted, "--t2r-feature-dim", "8", "--t2r-state", "gate",
               "--t2r-gate-source", "key", "--t2r-window", "4", threads=1)
    ck = load_checkpoint(converted)
    assert ck["cfg"]["model"]["t2r_window"] == 4
    assert {k.rsplit(".", 2)[-2:][1] for k in ck["model"] if ".window." in k} == {"log_factor"}
    # fairseq-train --finetune-from-model takes W from it when not given, and refuses another W
    train = [lm["data"], "--user-dir", USER_DIR, "--task", "language_modeling", "--arch", "t2r_transformer_lm",
             "--finetune-from-model", str(converted)]
    args = options.parse_args_and_arch(options.get_training_parser(), train)
    assert (args.t2r_window, args.t2r_state) == (4, "gate")
    with pytest.raises(T2RUserError, match="--t2r-window 8 contradicts"):
        options.parse_args_and_arch(options.get_training_parser(), train + ["--t2r-window", "8"])
    evaluate = [lm["data"], "--user-dir", USER_DIR, "--path", converted, "--max-tokens", "512",
                "--tokens-per-sample", "32", "--gen-subset", "test"]
    # (the linear branch alone: tests/modules/test_window_attention.py::test_branch_ablation)
    ppl = {b: _ppl(server.run("fairseq_cli.eval_lm", *evaluate, "--model-overrides",
                              "{'t2r_window_branch': '%s'}" % b, threads=1)) for b in ("both", "window")}
    assert ppl["both"] != ppl["window"], ppl  # the window alone is another model
    gen = server.run("fairseq_cli.generate", lm["data"], "--user-dir", USER_DIR, "--task", "language_modeling",
                     "--path", converted, "--beam", "4", "--nbest", "2", "--batch-size", "8", "--gen-subset", "test",
                     "--max-len-b", "12", "--tokens-per-sample", "32", "--prefix-size", "2", "--sample-break-mode", "eos",
                     threads=1)
    hypos = [line for line in gen.output.splitlines() if line.startswith("H-")]
    assert len(hypos) >= 20 and all(len(h.split("\t")) == 3 for h in hypos), gen.output[-2000:]
