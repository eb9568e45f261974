"""README.md's "Released checkpoints" commands, run as written on tiny stand-ins of each release
(tests/release_models.py: stock fairseq models in the release's format), in a sandbox where the
releases' own paths (``bart.large.cnn/model.pt``, ``m2m-bin``, ...) name the stand-ins; plus the
mBART (``translation_from_pretrained_bart``) release commands, and the mistakes that must stop in
one line. (Each finetuning's softmax control, a figure only: ``python -m benchmarks.released_controls``.)

What the tests change in the commands, and only that: ``--max-update N`` -> 4, ``--update-freq N``
-> 1, and the Python example's BPE (the stand-ins use subword-nmt, not GPT-2's).
"""
import os
import re
import shlex

import pytest
from release_models import released
from test_docs import MODULES, commands, released_blocks
from tool_server import ToolServer
from utils import USER_DIR

# the releases' paths (README.md) -> the stand-ins' (release_models.released() keys, data subfolders)
SANDBOX = {
    "bart.large.cnn/model.pt": "bart", "cnn_dm-bin": "data/cnn",
    "mbart50.ft.nn/model.pt": "mbart50", "mbart50.ft.nn/ML50_langs.txt": "data/mbart/langs.txt", "ml50-bin": "data/mbart",
    "m2m100_418M/418M_last_checkpoint.pt": "m2m", "m2m100_418M/model_dict.128k.txt": "data/dict.txt",
    "m2m-bin": "data/m2m", "wmt19.en-de.joined-dict.ensemble/model1.pt": "wmt19", "wmt19-bin": "data/m2m",
    "en_dense_lm_125m/model.pt": "lm", "lm-bin": "data/lm",
    "mbart.cc25.ft.en_de/model.pt": "mbart", "en_de-bin": "data/mbart", "bpe.codes": "data/bpe.codes",
}
# the mBART release's own commands (examples/mbart/README.md, its en-ro finetuning on en_XX-de_DE here)
LANGS = "en_XX,de_DE"
MBART = [
    "t2r-convert mbart.cc25.ft.en_de/model.pt mbart.cc25.ft.en_de/t2r.pt",
    "fairseq-train en_de-bin --user-dir fairseq_t2r --encoder-normalize-before --decoder-normalize-before "
    "--arch t2r_mbart_large --layernorm-embedding --task translation_from_pretrained_bart --source-lang en_XX "
    "--target-lang de_DE --criterion label_smoothed_cross_entropy --label-smoothing 0.2 --optimizer adam "
    "--adam-eps 1e-06 --adam-betas (0.9,0.98) --lr-scheduler polynomial_decay --lr 3e-05 --warmup-updates 2500 "
    "--total-num-update 40000 --dropout 0.3 --attention-dropout 0.1 --weight-decay 0.0 --max-tokens 1024 "
    "--update-freq 2 --seed 222 --finetune-from-model mbart.cc25.ft.en_de/t2r.pt --langs " + LANGS +
    " --ddp-backend legacy_ddp --max-update 40000 --save-dir runs/t2r-mbart",
    "fairseq-generate en_de-bin --user-dir fairseq_t2r --path runs/t2r-mbart/checkpoint_best.pt "
    "--task translation_from_pretrained_bart --gen-subset test -t de_DE -s en_XX --remove-bpe sentencepiece "
    "--batch-size 32 --langs " + LANGS + " --beam 4",
]
TEST_SENTENCES = 16  # release_models.LINES["test"]


def doc_commands():
    """[(kind, text)]: README's released section (bash commands, the Python example), then MBART."""
    out = []
    for lang, text in released_blocks():
        out += [("bash", c) for c in commands(text)] if lang == "bash" else [("python", text)]
    return out + [("bash", c) for c in MBART]


def as_run(text):
    """The changes the module docstring lists, and nothing else."""
    text = re.sub(r"--max-update \d+", "--max-update 4", text)
    return re.sub(r"--update-freq \d+", "--update-freq 1", text)


def _sandbox(root, rel):
    box = root / "box"
    for name, target in SANDBOX.items():
        path = box / name
        path.parent.mkdir(parents=True, exist_ok=True)
        key, _, sub = target.partition("/")
        path.symlink_to(os.path.join(rel["data"], sub) if key == "data" else rel[key])
    (box / "fairseq_t2r").symlink_to(USER_DIR)
    return box


def _start(server, box, kind, text, n):
    env = {"OMP_NUM_THREADS": "1"}
    if kind == "python":
        script = box / f"snippet{n}.py"
        script.write_text(text.replace('user_dir="fairseq_t2r")',
                                       'user_dir="fairseq_t2r", bpe="subword_nmt", bpe_codes="bpe.codes")'))
        return server.start(None, script=script, cwd=box, env=env, threads=1)
    argv = shlex.split(text)
    return server.start(MODULES[argv[0]], *argv[1:], cwd=box, env=env, threads=1)


# the mistakes (a command of the list, changed): each must stop with one line naming the fix
def _mistakes(cmds):
    m2m = next(t for _, t in cmds if t.startswith("fairseq-generate m2m-bin"))
    mbart = MBART[2]
    return {
        "wrong_task": ("fairseq-generate m2m-bin --user-dir fairseq_t2r --path runs/t2r-m2m100/checkpoint_best.pt "
                       "--task translation -s de -t en --gen-subset test --beam 4",
                       "use --task translation_multi_simple_epoch --lang-pairs en-de,de-en --encoder-langtok src "
                       "--decoder-langtok"),
        "no_decoder_langtok": (m2m.replace(" --decoder-langtok", ""), "pass --decoder-langtok"),
        "no_lang_pairs": (re.sub(r" --lang-pairs \S+", "", m2m), "needs --lang-pairs"),
        "no_langs": (mbart.replace(" --langs " + LANGS, ""), "needs --langs"),
        "mbart_as_translation": (mbart.replace("--task translation_from_pretrained_bart", "--task translation")
                                 .replace(" --langs " + LANGS, ""), "--task translation_from_pretrained_bart --langs " + LANGS),
    }


def pipeline(root):
    rel = released()
    box = _sandbox(root, rel)
    cmds = [(kind, as_run(text)) for kind, text in doc_commands()]
    results, mistakes = {}, {}
    with ToolServer() as server:
        for n, (kind, text) in enumerate(cmds):
            results[n] = _start(server, box, kind, text, n).wait(timeout=900)
        for name, (text, _) in _mistakes(cmds).items():
            mistakes[name] = _start(server, box, "bash", text, name).wait(timeout=300)
    return box, cmds, results, mistakes


@pytest.fixture(scope="module")
def run(pipeline_result):
    return pipeline_result


def _valid_loss(output):
    found = re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", output)
    assert found, output[-2000:]
    return float(found[-1])


def _bleu(output):
    return float(re.search(r"BLEU4? = ([\d.]+)", output).group(1))


@pytest.mark.parametrize("n", range(len(doc_commands())), ids=[t.split(" ")[0] + f"#{i}" for i, (_, t) in enumerate(doc_commands())])
def test_release_command_runs_as_written(run, n):
    box, cmds, results, _ = run
    kind, text = cmds[n]
    res = results[n]
    assert res.returncode == 0, f"{text}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    out = res.stdout + res.stderr
    if text.startswith("t2r-convert"):
        assert (box / shlex.split(text)[2]).is_file()
        assert re.search(r"copied \d+ tensors unchanged, initialised \d+ new tensors: decoder\.layers\.\{0,1\}\.self_attn\.feature_map", out)
        print(f"\n{text}: " + re.search(r"arch \S+, copied \d+ tensors unchanged, initialised \d+ new tensors", out).group(0))
    elif text.startswith("fairseq-train"):
        assert (box / re.search(r"--save-dir (\S+)", text).group(1) / "checkpoint_best.pt").is_file()
        t2r = _valid_loss(out)
        arch = re.search(r"--arch (\S+)", text).group(1)
        print(f"\n{text.split()[1]} {arch}: valid loss after 4 updates {t2r:.3f}")
        assert 0 < t2r < 50
    elif text.startswith("fairseq-generate"):
        hypos = [line for line in res.stdout.splitlines() if line.startswith("H-")]
        assert len(hypos) == TEST_SENTENCES, res.stdout[-2000:]
        print(f"\n{text.split()[1]}: {len(hypos)} beam-4 hypotheses, BLEU {_bleu(res.stdout):.2f} (mechanics only)")
    elif text.startswith("fairseq-eval-lm"):
        assert re.search(r"Perplexity: [\d.]+", out) and int(re.search(r"Evaluated ([\d,]+) tokens", out).group(1).replace(",", "")) > 500
    else:  # the Python example: one summary, as text
        printed = res.stdout.strip()
        assert printed.startswith("['") and printed.endswith("']") and "@@" not in printed, printed[-500:]


@pytest.mark.parametrize("name", ["wrong_task", "no_decoder_langtok", "no_lang_pairs", "no_langs", "mbart_as_translation"])
def test_release_task_mistakes_stop_in_one_line(run, name):
    _, cmds, _, mistakes = run
    res = mistakes[name]
    expected = _mistakes(cmds)[name][1]
    assert res.returncode == 1 and len(res.error_lines()) == 1, (res.returncode, res.stderr[-2000:])
    assert res.error_lines() == [res.stderr.strip().splitlines()[-1]]
    assert expected in res.error_lines()[0], res.error_lines()
