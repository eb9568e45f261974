"""The docs' commands as the tests run them, shared by tests/test_docs.py, tests/e2e/test_released.py
and benchmarks/released_controls.py (which imports it as ``tests.doc_commands``, from the repository
root, as the tests do): a bash block's commands, the tools' modules by command name, README.md's
"Released checkpoints" commands (plus the mBART release's own), the changes the tests make to
them, and the sandbox where the releases' paths (``bart.large.cnn/model.pt``, ``m2m-bin``, ...)
name the stand-ins of tests/release_models.py.
"""
import os
import re
import shlex
from pathlib import Path

from tests.utils import REPO, USER_DIR

MODULES = {"fairseq-train": "fairseq_cli.train", "fairseq-eval-lm": "fairseq_cli.eval_lm",
           "fairseq-interactive": "fairseq_cli.interactive", "fairseq-generate": "fairseq_cli.generate",
           "t2r-convert": "fairseq_t2r.convert", "t2r-compare": "fairseq_t2r.compare"}
RELEASED_SECTION = "## Released checkpoints"

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


def commands(text):
    """The commands of a bash block: continuation lines joined, comment and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def released_blocks():
    """(language, text) of the fenced blocks of README.md's "Released checkpoints" section."""
    text = Path(REPO, "README.md").read_text()
    start = text.index(RELEASED_SECTION + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    return re.findall(r"^```(bash|python)\n(.*?)^```", section, re.S | re.M)


def released_commands():
    """[(kind, text)]: README's released section (bash commands, the Python example), then MBART."""
    out = []
    for lang, text in released_blocks():
        out += [("bash", c) for c in commands(text)] if lang == "bash" else [("python", text)]
    return out + [("bash", c) for c in MBART]


def as_run(text):
    """What the tests change in a released command, and nothing else: ``--max-update N`` -> 4,
    ``--update-freq N`` -> 1."""
    text = re.sub(r"--max-update \d+", "--max-update 4", text)
    return re.sub(r"--update-freq \d+", "--update-freq 1", text)


def make_sandbox(root, rel):
    """ROOT/box, where each SANDBOX path links to its stand-in in ``rel`` (release_models.released())
    and ``fairseq_t2r`` to the plugin."""
    box = root / "box"
    for name, target in SANDBOX.items():
        path = box / name
        path.parent.mkdir(parents=True, exist_ok=True)
        key, _, sub = target.partition("/")
        path.symlink_to(os.path.join(rel["data"], sub) if key == "data" else rel[key])
    (box / "fairseq_t2r").symlink_to(USER_DIR)
    return box


def start_command(server, box, kind, text, n):
    """Starts one released command (``kind`` bash, or python: the example as script ``snippet{n}.py``,
    with the stand-ins' BPE) on a ToolServer in ``box``, one thread; -> the job."""
    env = {"OMP_NUM_THREADS": "1"}
    if kind == "python":
        script = box / f"snippet{n}.py"
        script.write_text(text.replace('user_dir="fairseq_t2r")',
                                       'user_dir="fairseq_t2r", bpe="subword_nmt", bpe_codes="bpe.codes")'))
        return server.start(None, script=script, cwd=box, env=env, threads=1)
    argv = shlex.split(text)
    return server.start(MODULES[argv[0]], *argv[1:], cwd=box, env=env, threads=1)


def last_valid_loss(output):
    """The last validation loss fairseq-train printed in ``output`` (asserts there is one)."""
    found = re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", output)
    assert found, output[-2000:]
    return float(found[-1])
