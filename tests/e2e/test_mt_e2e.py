"""End to end on real EN-DE text (LibreOffice help, tests/data/mt) through fairseq's stock tools:
fairseq-train a tiny softmax ``transformer``, swap (t2r-convert) and finetune it as
``t2r_transformer``, then fairseq-generate (beam, --nbest, --sampling, ensembles, sacrebleu),
fairseq-interactive, fairseq-validate and the hub interface on both kinds of checkpoint, and
check that beam search in the recurrent form scores every hypothesis as the parallel form does.

Budget (2 cores): prep ~25 s, teacher 400 updates ~60 s, finetune 250 updates ~45 s with the
evaluation runs of the teacher and the swapped model beside it; every tool runs single-threaded
so that two of them can share the two cores.
"""
import math
import os
import re
import time
from argparse import Namespace

import pytest
import torch
from tool_server import ToolServer
from utils import DATA, USER_DIR

MODEL = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64",
         "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
         "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--share-all-embeddings"]
TRAIN = ["--user-dir", USER_DIR, "--task", "translation", "-s", "en", "-t", "de",
         "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "5e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "50", "--max-tokens", "2048", "--criterion", "label_smoothed_cross_entropy",
         "--label-smoothing", "0.1", "--dropout", "0.0", "--no-epoch-checkpoints", "--no-last-checkpoints",
         "--log-format", "simple", "--log-interval", "100", "--seed", "1", "--num-workers", "0"]
GEN = ["--user-dir", USER_DIR, "-s", "en", "-t", "de", "--gen-subset", "test", "--max-tokens", "4096", "--beam", "4",
       "--max-len-a", "1.2", "--max-len-b", "10", "--remove-bpe", "--tokenizer", "moses",
       "--scoring", "sacrebleu"]
VALIDATE = ["--user-dir", USER_DIR, "--task", "translation", "--valid-subset", "test", "--max-tokens", "4096"]
INTERACTIVE_INPUT = "Click OK to close the dialog.\nChoose Format - Cells.\n"

# Each tool runs as ``python -m MODULE ARGS`` would, forked from a tool server of the pipeline's
# own (tests/tool_server.py: fairseq already imported), with one torch thread so that two tools
# can share the two cores.
class Tools:
    def __init__(self, server):
        self.server = server

    def start(self, module, *args):
        return self.server.start(module, *args, threads=1)

    def run(self, module, *args):
        return self.start(module, *args).wait(timeout=600, check=True).output


def bleu(output):
    m = re.search(r"BLEU = ([\d.]+)", output)
    assert m, output[-2000:]
    return float(m.group(1))


def valid_loss(output):
    m = re.search(r"valid on 'test' subset \| loss ([\d.]+|inf|nan)", output)
    assert m, output[-2000:]
    return float(m.group(1))




def pipeline(root):
    """Started in the background at collection (tests/conftest.py); the ``run_all`` fixture waits for it."""
    with ToolServer() as server:
        return _pipeline(root, Tools(server))


@pytest.fixture(scope="module")
def run_all(pipeline_result):
    return pipeline_result


def _pipeline(root, tool):
    from fairseq_t2r.convert import convert

    t0 = time.time()
    tool.run("fairseq_t2r.prep.mt", "--out", root / "data", "--src", os.path.join(DATA, "mt", "libreoffice.en"),
             "--tgt", os.path.join(DATA, "mt", "libreoffice.de"), "--bpe-merges", "1000")
    data = str(root / "data" / "bin")
    t_prep = time.time()
    teacher_dir, t2r_dir = root / "softmax", root / "t2r"
    teacher, swapped, t2r = teacher_dir / "checkpoint_best.pt", root / "swapped.pt", t2r_dir / "checkpoint_best.pt"
    tool.run("fairseq_cli.train", data, *TRAIN, "--arch", "transformer", *MODEL,
             "--max-update", "400", "--save-dir", teacher_dir)
    convert(str(teacher), str(swapped), {"t2r_feature_map": "t2r", "t2r_feature_dim": 32, "t2r_layers": None,
                                         "t2r_cross_feature_dim": None, "t2r_cross": "linear"})
    t1 = time.time()
    # the swapped model's evaluation runs while it is finetuned
    # linear cross-attention too (--t2r-cross linear): the recurrent form of both attentions end to end
    finetune = tool.start("fairseq_cli.train", data, *TRAIN, "--arch", "t2r_transformer", *MODEL, "--t2r-cross", "linear",
                          "--max-update", "250", "--finetune-from-model", teacher, "--save-dir", t2r_dir)
    out = {
        "gen_teacher": tool.run("fairseq_cli.generate", data, *GEN, "--path", teacher),
        "gen_swapped": tool.run("fairseq_cli.generate", data, *GEN, "--path", swapped),
        "val_teacher": tool.run("fairseq_cli.validate", data, *VALIDATE, "--path", teacher),
        "finetune": finetune.wait(timeout=600, check=True).output,
    }
    t2 = time.time()
    (root / "input.en").write_text(INTERACTIVE_INPUT)
    gen_t2r = tool.start("fairseq_cli.generate", data, *GEN, "--path", t2r, "--nbest", "4")  # BLEU of the best
    out["interactive"] = tool.run(
        "fairseq_cli.interactive", data, "--user-dir", USER_DIR, "--path", t2r, "-s", "en", "-t", "de",
        "--tokenizer", "moses", "--bpe", "subword_nmt", "--bpe-codes", os.path.join(data, "bpe.codes"),
        "--beam", "4", "--nbest", "2", "--max-len-b", "40", "--input", root / "input.en")
    out["val_t2r"] = tool.run("fairseq_cli.validate", data, *VALIDATE, "--path", t2r)
    out["gen_t2r"] = gen_t2r.wait(timeout=600, check=True).output
    out["gen_ensemble"] = tool.run("fairseq_cli.generate", data, *GEN, "--path", f"{t2r}:{swapped}", "--nbest", "2",
                                   "--sampling", "--sampling-topk", "10", "--beam", "2", "--seed", "1")
    print(f"\nmt e2e wall time: prep {t_prep - t0:.0f}s, teacher {t1 - t_prep:.0f}s, finetune + evaluation "
          f"{t2 - t1:.0f}s, evaluation of the finetuned model {time.time() - t2:.0f}s")
    return {"root": root, "data": data, "teacher": str(teacher), "swapped": str(swapped), "t2r": str(t2r),
            "t2r_dir": str(t2r_dir), **out}


def test_swap_copies_and_initialises_cross_attention_too(run_all):
    lines = [line for line in run_all["finetune"].splitlines() if "T2R swap:" in line]
    assert len(lines) == 1, run_all["finetune"][-2000:]
    assert ("initialised 8 new tensors: decoder.layers.{0,1}.self_attn.feature_map.weight, "
            "decoder.layers.{0,1}.self_attn.feature_map.bias, decoder.layers.{0,1}.encoder_attn.feature_map.weight, "
            "decoder.layers.{0,1}.encoder_attn.feature_map.bias") in lines[0]


def test_bleu_finetuned_t2r_beats_swap(run_all):
    scores = {k: bleu(run_all["gen_" + k]) for k in ("teacher", "swapped", "t2r", "ensemble")}
    losses = {k: valid_loss(run_all["val_" + k]) for k in ("teacher", "t2r")}
    print(f"\ntest BLEU (beam 4, sacrebleu): softmax teacher {scores['teacher']:.2f}, right after swap "
          f"{scores['swapped']:.2f}, T2R finetuned {scores['t2r']:.2f}, sampled ensemble T2R+swapped {scores['ensemble']:.2f}")
    print(f"test loss (fairseq-validate): softmax teacher {losses['teacher']:.3f}, T2R finetuned {losses['t2r']:.3f}")
    assert scores["teacher"] > 1.0  # the teacher learned something
    assert scores["t2r"] > scores["swapped"]
    assert scores["t2r"] > 1.0
    assert all(math.isfinite(v) for v in losses.values())


def nbest_lists(output):
    hyps = {}
    for line in output.splitlines():
        if line.startswith("H-"):
            hyps.setdefault(line.split("\t")[0], []).append(line)
    return hyps


def test_nbest_and_sampled_ensemble(run_all):
    beam = nbest_lists(run_all["gen_t2r"])  # beam 4, --nbest 4
    assert len(beam) == 200 and all(len(h) == 4 for h in beam.values())
    sampled = nbest_lists(run_all["gen_ensemble"])  # two T2R models, --sampling --beam 2 --nbest 2
    assert len(sampled) == 200 and all(len(h) == 2 for h in sampled.values())
    assert "Generate test with beam=2" in run_all["gen_ensemble"]


def test_interactive_bpe_tokenizer_nbest(run_all):
    out = run_all["interactive"]
    for i in range(2):
        hyps = [line for line in out.splitlines() if line.startswith(f"D-{i}\t")]
        assert len(hyps) == 2, out[-2000:]
        assert all("@@" not in h and h.split("\t")[2].strip() for h in hyps)


def test_hub_translate(run_all):
    from fairseq.models.transformer import TransformerModel

    hub = TransformerModel.from_pretrained(
        run_all["t2r_dir"], checkpoint_file="checkpoint_best.pt", data_name_or_path=run_all["data"],
        user_dir=USER_DIR, tokenizer="moses", bpe="subword_nmt",
        bpe_codes=os.path.join(run_all["data"], "bpe.codes")).eval()
    assert type(hub.models[0]).__name__ == "T2RTransformerModel"
    out = hub.translate(["Choose Format - Cells.", "Click OK."], beam=4)
    assert len(out) == 2 and all(isinstance(s, str) and s and "@@" not in s for s in out)


def _load(paths, data):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(paths, arg_overrides={"data": data})
    return [m.eval() for m in models], task


def test_beam_hypotheses_match_parallel_rescoring(run_all):
    """Every hypothesis of beam 4 / nbest 4 on the real test set (recurrent decoding, state
    reordered by beam search, sentences finishing at different steps) gets, position by
    position, the log-probability that one parallel forward pass assigns to it; likewise for an
    ensemble of two T2R models (log of the averaged probabilities)."""
    models, task = _load([run_all["t2r"], run_all["swapped"]], run_all["data"])
    task.load_dataset("test")
    d = task.target_dictionary
    worst = {"single": 0.0, "ensemble": 0.0}
    n_hyps = 0
    for label, ms, max_sentences, batches in (("single", models[:1], 32, 3), ("ensemble", models, 16, 1)):
        generator = task.build_generator(ms, Namespace(beam=4, nbest=4, max_len_a=1.2, max_len_b=10))
        itr = task.get_batch_iterator(dataset=task.dataset("test"), max_tokens=2048,
                                      max_sentences=max_sentences, seed=1).next_epoch_itr(shuffle=True)
        for _, sample in zip(range(batches), itr):
            with torch.no_grad():
                hypos = task.inference_step(generator, ms, sample)
                for i, nbest in enumerate(hypos):
                    assert len(nbest) == 4
                    toks = [h["tokens"] for h in nbest]
                    T = max(len(t) for t in toks)
                    target = torch.full((4, T), d.pad())
                    for j, t in enumerate(toks):
                        target[j, : len(t)] = t
                    prev = torch.cat([torch.full((4, 1), d.eos()), target[:, :-1]], 1)
                    src = sample["net_input"]["src_tokens"][i: i + 1].expand(4, -1)
                    src_len = sample["net_input"]["src_lengths"][i: i + 1].expand(4)
                    lps = []
                    for m in ms:
                        out = m(src, src_len, prev)
                        lps.append(m.get_normalized_probs(out, log_probs=True).gather(-1, target[..., None])[..., 0])
                    lp = torch.logsumexp(torch.stack(lps), 0) - math.log(len(ms))
                    for j, h in enumerate(nbest):
                        diff = (lp[j, : len(toks[j])] - h["positional_scores"]).abs().max().item()
                        worst[label] = max(worst[label], diff)
                        n_hyps += 1
    print(f"\nmax |recurrent - parallel| positional score over {n_hyps} hypotheses: {worst}")
    assert worst["single"] <= 1e-4 and worst["ensemble"] <= 1e-4
