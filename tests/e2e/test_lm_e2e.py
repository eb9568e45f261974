"""End to end on real English text, through the stock fairseq command-line tools:
train a tiny softmax transformer_lm, swap and finetune it as T2R, evaluate, generate."""
import math
import os
import re

import pytest
import torch
from tool_server import ToolServer, tools
from utils import DATA, USER_DIR

MODEL = [
    "--decoder-layers", "2", "--decoder-embed-dim", "64", "--decoder-input-dim", "64",
    "--decoder-output-dim", "64", "--decoder-ffn-embed-dim", "128", "--decoder-attention-heads", "4",
    "--share-decoder-input-output-embed",
]
TRAIN = [
    "--user-dir", USER_DIR, "--task", "language_modeling", "--tokens-per-sample", "64",
    "--sample-break-mode", "eos", "--skip-invalid-size-inputs-valid-test",  # eos: exercises the numpy-2 fix
    "--max-tokens", "2048", "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", "40", "--dropout", "0.1", "--no-epoch-checkpoints", "--log-format", "simple",
    "--log-interval", "50", "--seed", "1", "--num-workers", "0",
]


def start_eval_ppl(server, data, path):
    return server.start("fairseq_cli.eval_lm", data, "--user-dir", USER_DIR, "--path", path,
                        "--max-tokens", "4096", "--tokens-per-sample", "64", "--gen-subset", "test", threads=1)


def ppl(job):
    res = job.wait(check=True)
    m = re.search(r"Perplexity: ([\d.]+|inf|nan)", res.stdout + res.stderr)
    assert m, res.stderr[-2000:]
    return float(m.group(1))


def pipeline(root):
    """Started in the background at collection (tests/conftest.py); the ``trained`` fixture waits for it.
    Every tool is forked from a tool server of the pipeline's own, with one thread."""
    with ToolServer() as server:
        return _pipeline(root, server)


@pytest.fixture(scope="module")
def trained(pipeline_result):
    return pipeline_result


def _pipeline(root, server):
    server.run("fairseq_t2r.prep.lm", "--out", root / "data", "--text", os.path.join(DATA, "lm", "english.txt"),
               "--max-lines", "4000", "--bpe-merges", "1500", threads=1)
    data = str(root / "data" / "bin")
    teacher_dir, t2r_dir = root / "softmax", root / "t2r"
    server.run("fairseq_cli.train", data, *TRAIN, "--arch", "transformer_lm", *MODEL,
               "--max-update", "250", "--save-dir", teacher_dir, threads=1)
    teacher = str(teacher_dir / "checkpoint_best.pt")
    swapped = str(root / "swapped.pt")
    server.run("fairseq_t2r.convert", teacher, swapped, threads=1)
    # the teacher and the swapped model are evaluated on the second core while the finetuning runs
    finetune = server.start("fairseq_cli.train", data, *TRAIN, "--arch", "t2r_transformer_lm", *MODEL,
                            "--max-update", "150", "--finetune-from-model", teacher, "--save-dir", t2r_dir,
                            threads=1)
    perplexity = {"teacher": ppl(start_eval_ppl(server, data, teacher)),
                  "swapped": ppl(start_eval_ppl(server, data, swapped))}
    finetune = finetune.wait(check=True)
    t2r = str(t2r_dir / "checkpoint_best.pt")
    perplexity["finetuned"] = ppl(start_eval_ppl(server, data, t2r))
    return {"root": root, "data": data, "teacher": teacher, "swapped": swapped, "t2r": t2r, "t2r_dir": str(t2r_dir),
            "finetune_log": finetune.stdout + finetune.stderr, "ppl": perplexity}


def test_swap_logs_copied_and_new_tensors(trained):
    lines = [line for line in trained["finetune_log"].splitlines() if "T2R swap:" in line]
    assert len(lines) == 1
    assert re.search(r"copied \d+ tensors .* initialised 4 new tensors: decoder\.layers\.\{0,1\}\.self_attn\.feature_map", lines[0])


def test_finetuning_lowers_perplexity(trained):
    teacher, swapped, finetuned = (trained["ppl"][k] for k in ("teacher", "swapped", "finetuned"))
    print(f"test perplexity: softmax teacher {teacher:.2f}, right after swap {swapped:.2f}, T2R finetuned {finetuned:.2f}")
    assert all(math.isfinite(p) for p in (teacher, swapped, finetuned))
    assert finetuned < swapped


def test_greedy_generation_matches_parallel_argmax(trained):
    """Generation runs the recurrent form; its greedy tokens and scores must be what the
    parallel forward pass assigns to the same text."""
    from fairseq.models.transformer_lm import TransformerLanguageModel

    hub = TransformerLanguageModel.from_pretrained(
        trained["t2r_dir"], "checkpoint_best.pt", data_name_or_path=trained["data"], user_dir=USER_DIR
    ).eval()
    model = hub.models[0]
    assert type(model).__name__ == "T2RTransformerLanguageModel"
    dictionary = hub.task.target_dictionary
    prompts = ["the president said that", "we have"]
    for prompt in prompts:
        tokens = hub.encode(prompt)[:-1]  # drop the eos that encode appends
        hypo = hub.generate([tokens], beam=1, sampling=False, max_len_b=24, min_len=8)[0][0]
        out = hypo["tokens"]
        assert torch.equal(out[: len(tokens)], tokens)
        prev = torch.cat([torch.tensor([dictionary.eos()]), out[:-1]]).unsqueeze(0)
        with torch.no_grad():
            logits, _ = model(prev)
        lprobs = torch.log_softmax(logits.float(), dim=-1)[0]
        gen_positions = range(len(tokens), len(out) - 1)  # the final eos may be forced by max_len
        logits[0, :, dictionary.pad()] = -math.inf
        argmax = logits[0].argmax(-1)
        for i in gen_positions:
            assert argmax[i].item() == out[i].item(), (prompt, i)
        picked = lprobs[torch.arange(len(out)), out][len(tokens):]
        assert torch.allclose(picked, hypo["positional_scores"][len(tokens):], atol=1e-4)


@pytest.mark.parametrize("mode", [["--beam", "4"], ["--sampling", "--beam", "1", "--seed", "3"]])
def test_interactive_language_modeling(trained, mode, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the people of\n")
    res = tools().run("fairseq_cli.interactive", trained["data"], "--user-dir", USER_DIR, "--task", "language_modeling",
                      "--path", trained["t2r"], "--max-len-b", "12", *mode, stdin=prompt, check=False, threads=1)
    assert res.returncode == 0, res.stderr[-2000:]
    hyps = [line for line in res.stdout.splitlines() if line.startswith("H-")]
    assert len(hyps) == 1 and len(hyps[0].split("\t")[2].split()) > 3


def test_mismatched_finetune_stops_before_writing(trained):
    save_dir = trained["root"] / "bad"
    res = tools().run("fairseq_cli.train", trained["data"], *TRAIN, "--arch", "t2r_transformer_lm",
                      *[a if a != "128" else "96" for a in MODEL], "--max-update", "5",
                      "--finetune-from-model", trained["teacher"], "--save-dir", save_dir, check=False, threads=1)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("fairseq_t2r: error")]
    assert len(errors) == 1 and "decoder.layers.0.fc1.weight" in errors[0] and "(96, 64)" in errors[0]
    assert "Traceback" not in res.stderr
    assert not (save_dir.exists() and list(save_dir.glob("*.pt")))
