"""Tiny stand-ins for fairseq's released checkpoints, built with stock fairseq in their release's
format, on slices of tests/data (shared by tests/models/test_bart.py, test_multilingual.py and the
pipeline of tests/e2e/test_released.py).

- data: LibreOffice EN-DE lines, binarised three ways with one fixed shared dictionary:
  ``cnn`` (source -> target, the target the source's first 6 words: a summarization stand-in),
  after joint subword-nmt BPE (``bpe.codes``: the hub interface's ``sample()`` needs a BPE);
  ``mbart`` (en_XX -> de_DE, with mBART-50's ``langs.txt``), ``m2m`` (en-de; also the WMT19 stand-in's),
  ``lm`` (the English side, for the dense LM);
- teachers: each family's release command line parsed by fairseq-train's own parser (so its
  ``args`` Namespace is what the release stores), the model built by the release's task and
  trained a few Adam steps in-process on its task's batches and criterion, saved as a pre-hydra
  checkpoint (``args``, no ``cfg``; the dense LM: ``cfg``, as fairseq >= 0.10 wrote them). The BART
  teacher carries a classification head.
"""
import os
import shutil
import tempfile
import threading

import torch

from tests.utils import DATA, USER_DIR  # (the repository root as the import root: released_controls imports this too)

# test: a multiple of 8 (fairseq's --required-batch-size-multiple): fairseq-generate drops the remainder
LINES = {"train": (0, 200), "valid": (200, 240), "test": (240, 256)}
TINY = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
        "--decoder-attention-heads", "4"]
LANG_PAIRS = "en-de,de-en"


def task_flags(family, data, generate=False):
    """Each release's task flags (as its README runs them), on the stand-in data; ``generate``:
    with the translation direction (translation_multi_simple_epoch trains on all --lang-pairs
    when -s/-t are not given)."""
    if family == "bart":  # bart.large.cnn: summarization under the translation task
        return [f"{data}/cnn", "--task", "translation", "--source-lang", "source", "--target-lang", "target",
                "--truncate-source"]
    if family == "mbart":  # mbart.cc25 finetuned for one pair
        return [f"{data}/mbart", "--task", "translation_from_pretrained_bart", "--source-lang", "en_XX",
                "--target-lang", "de_DE", "--langs", "en_XX,de_DE"]
    if family == "wmt19":
        return [f"{data}/m2m", "--task", "translation", "--source-lang", "en", "--target-lang", "de"]
    if family == "lm":
        return [f"{data}/lm", "--task", "language_modeling", "--tokens-per-sample", "2048", "--sample-break-mode", "none"]
    direction = ["--source-lang", "en", "--target-lang", "de"]
    if family == "mbart50":  # mbart.large.50 finetuned many-to-many
        flags = [f"{data}/mbart", "--lang-pairs", "en_XX-de_DE,de_DE-en_XX", "--lang-dict", f"{data}/mbart/langs.txt"]
        direction = ["--source-lang", "en_XX", "--target-lang", "de_DE"]
    else:  # m2m100
        flags = [f"{data}/m2m", "--lang-pairs", LANG_PAIRS, "--fixed-dictionary", f"{data}/dict.txt"]
    return [flags[0], "--task", "translation_multi_simple_epoch", *flags[1:], "--encoder-langtok", "src",
            "--decoder-langtok", *(direction if generate else [])]


def model_flags(family):
    """The release's architecture flags (tiny sizes)."""
    if family == "bart":
        return ["--arch", "bart_large", *TINY, "--share-all-embeddings", "--layernorm-embedding"]
    if family in ("mbart", "mbart50"):
        return ["--arch", "mbart_large", *TINY, "--encoder-normalize-before", "--decoder-normalize-before",
                "--layernorm-embedding"]
    if family == "lm":  # the dense LMs' GPT-3-style architecture
        return ["--arch", "transformer_lm_gpt3_small", "--decoder-layers", "2", "--decoder-embed-dim", "32",
                "--decoder-attention-heads", "4", "--share-decoder-input-output-embed"]
    return ["--arch", "transformer_wmt_en_de_big", *TINY, "--share-all-embeddings", "--encoder-normalize-before",
            "--decoder-normalize-before"]


def make_data(root):
    """The three binarised layouts under ``root`` (fairseq-preprocess in-process)."""
    from fairseq import options
    from fairseq_cli import preprocess

    raw = os.path.join(root, "raw")
    os.makedirs(raw)
    from fairseq_t2r.prep.pipeline import apply_bpe, learn_bpe, load_bpe

    src = open(os.path.join(DATA, "mt", "libreoffice.en")).read().splitlines()[:LINES["test"][1]]
    tgt = open(os.path.join(DATA, "mt", "libreoffice.de")).read().splitlines()[:LINES["test"][1]]
    codes = os.path.join(root, "bpe.codes")  # joint subword-nmt BPE on train (hub sample() needs a BPE)
    learn_bpe(src[:LINES["train"][1]] + tgt[:LINES["train"][1]], codes, merges=300)
    bpe = load_bpe(codes)
    short = [" ".join(s.split()[:6]) for s in src]
    src, tgt, short = apply_bpe(bpe, src), apply_bpe(bpe, tgt), apply_bpe(bpe, short)
    for split, (a, b) in LINES.items():
        files = {"en": src[a:b], "de": tgt[a:b], "source": src[a:b], "target": short[a:b],
                 "en_XX": src[a:b], "de_DE": tgt[a:b]}
        for lang, lines in files.items():
            with open(os.path.join(raw, f"{split}.{lang}"), "w") as f:
                f.write("\n".join(lines) + "\n")

    def binarize(src_lang, tgt_lang, dest, *extra):
        parser = options.get_preprocessing_parser()
        args = parser.parse_args(["-s", src_lang, "-t", tgt_lang, "--trainpref", f"{raw}/train", "--validpref",
                                  f"{raw}/valid", "--testpref", f"{raw}/test", "--destdir", os.path.join(root, dest),
                                  "--workers", "1", "--joined-dictionary", *extra])
        preprocess.main(args)

    binarize("en", "de", "m2m")
    shutil.copy(os.path.join(root, "m2m", "dict.en.txt"), os.path.join(root, "dict.txt"))
    with open(os.path.join(root, "m2m", "langs.txt"), "w") as f:
        f.write("en\nde\n")
    binarize("source", "target", "cnn", "--srcdict", os.path.join(root, "dict.txt"))
    binarize("en_XX", "de_DE", "mbart", "--srcdict", os.path.join(root, "dict.txt"))
    with open(os.path.join(root, "mbart", "langs.txt"), "w") as f:  # mBART-50's ML50_langs.txt
        f.write("en_XX\nde_DE\n")
    preprocess.main(options.get_preprocessing_parser().parse_args([
        "--only-source", "--trainpref", f"{raw}/train.en", "--validpref", f"{raw}/valid.en", "--testpref",
        f"{raw}/test.en", "--destdir", os.path.join(root, "lm"), "--workers", "1", "--srcdict", os.path.join(root, "dict.txt")]))


def release_args(family, data, *extra):
    """fairseq-train's parse of the release's command line (softmax arch): the pre-hydra ``args``."""
    from fairseq import options

    from fairseq_t2r.command_line import command_line_only

    criterion = ["--criterion", "cross_entropy"] if family == "lm" else [
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
    argv = [*task_flags(family, data), *model_flags(family), "--user-dir", USER_DIR, "--dropout", "0", *criterion,
            "--optimizer", "adam", "--lr", "0.003", "--max-tokens", "2048", "--seed", "1", *extra]
    with command_line_only():
        return options.parse_args_and_arch(options.get_training_parser(), argv)


def train_steps(model, task, args, steps, lr=3e-3):
    """``steps`` Adam updates on the task's training batches with its criterion (in-process)."""
    task.load_dataset("train", epoch=1)
    criterion = task.build_criterion(args)
    itr = task.get_batch_iterator(task.dataset("train"), max_tokens=2048, seed=1, epoch=1).next_epoch_itr(shuffle=True)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    batches = list(itr)
    for step in range(steps):
        loss, sample_size, _ = criterion(model, batches[step % len(batches)])
        opt.zero_grad()
        (loss / sample_size).backward()
        opt.step()
    model.eval()


def make_teacher(family, data, path, steps=12):
    from fairseq import tasks

    args = release_args(family, data)
    task = tasks.setup_task(args)
    torch.manual_seed(1)
    model = task.build_model(args)
    if family == "bart":  # bart.large.mnli-style head: carried over by the swap
        model.register_classification_head("mnli", num_classes=3)
    train_steps(model, task, args, steps)
    state = {"model": model.state_dict(), "extra_state": {"epoch": 1},
             "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                                    "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": None},
                                    "num_updates": steps}],
             "last_optimizer_state": None}
    if family == "lm":  # the dense LMs were saved by fairseq >= 0.10: a cfg, no args
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf
        from omegaconf import OmegaConf

        state.update(cfg=OmegaConf.to_container(convert_namespace_to_omegaconf(args)), args=None)
    else:  # the pre-hydra release format: the training run's whole argparse Namespace
        state["args"] = args
    torch.save(state, path)
    return path


FAMILIES = ("bart", "mbart", "mbart50", "m2m", "wmt19", "lm")


_LOCK = threading.Lock()
_MADE = {}


def make_all(root):
    """The data and every family's teacher under ROOT (``released``'s process)."""
    import fairseq_t2r.models  # noqa: F401  (the patches: the mBART task needs them)

    make_data(root)
    for family in FAMILIES:
        # the dense LM trains on whole 2048-token blocks (its release's --tokens-per-sample; 3 in its
        # training split), the costliest steps here: 4 see each block; what uses it is mechanics
        # (a bit-exact swap, the release's commands)
        make_teacher(family, root, os.path.join(root, f"{family}.pt"), steps=4 if family == "lm" else 12)


def released():
    """{"data", FAMILY: teacher checkpoint}: the data root and each family's teacher, made once
    per session (about 15 s on one core) in a process of its own: a test pipeline's thread asks
    first while the main thread's tests seed and read torch's global generator, which
    ``make_teacher`` seeds too."""
    with _LOCK:
        if not _MADE:
            import atexit
            import subprocess
            import sys

            root = tempfile.mkdtemp(prefix="t2r-released-")
            atexit.register(shutil.rmtree, root, True)
            repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            res = subprocess.run([sys.executable, "-m", "tests.release_models", root], cwd=repo, capture_output=True,
                                 text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            if res.returncode != 0:
                raise RuntimeError(f"making the released stand-ins failed: {res.stderr[-3000:]}")
            _MADE.update(data=root, **{family: os.path.join(root, f"{family}.pt") for family in FAMILIES})
        return dict(_MADE)


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    make_all(sys.argv[1])
