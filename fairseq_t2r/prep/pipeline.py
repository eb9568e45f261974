"""Shared preparation pipeline, one function per step.

raw lines -> :func:`tokenize` (sacremoses, fairseq's ``--tokenizer moses`` defaults) ->
:func:`split` (dedupe, seeded shuffle, disjoint train/valid/test) -> :func:`learn_bpe` on
train only -> :func:`apply_bpe` to every split -> :func:`binarize` (``fairseq-preprocess``).

The BPE codes are written to ``OUT/bpe.codes`` and copied to ``OUT/bin/bpe.codes`` so that
``fairseq-interactive OUT/bin --tokenizer moses --bpe subword_nmt --bpe-codes
OUT/bin/bpe.codes`` reproduces the preprocessing at inference time.
"""
import io
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .corpora import PrepError, log

# --------------------------------------------------------------------------- tokenisation

_TOKENIZERS = {}


def _moses(lang):
    if lang not in _TOKENIZERS:
        from sacremoses import MosesTokenizer

        _TOKENIZERS[lang] = MosesTokenizer(lang=lang)
    return _TOKENIZERS[lang]


def tokenize_line(line: str, lang: str) -> str:
    """Moses-tokenise one line exactly as fairseq's ``--tokenizer moses`` does by default
    (aggressive dash splits, XML escaping)."""
    return _moses(lang).tokenize(" ".join(line.split()), aggressive_dash_splits=True,
                                 return_str=True, escape=True)


def _tokenize_chunk(args):
    lines, lang = args
    return [tokenize_line(line, lang) for line in lines]


def tokenize(lines, lang: str, workers: int = 1, chunk: int = 2000):
    """Tokenise a list of lines (order kept); uses ``workers`` processes for large inputs."""
    lines = list(lines)
    if workers <= 1 or len(lines) <= chunk:
        return _tokenize_chunk((lines, lang))
    chunks = [(lines[i:i + chunk], lang) for i in range(0, len(lines), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return [tok for part in ex.map(_tokenize_chunk, chunks) for tok in part]


# BPE merges when a prep tool is not told (--bpe-merges); the demo's presets always pass theirs
DEFAULT_BPE_MERGES = 10000


def add_common_options(parser):
    """The options both prep tools (t2r-prepare-lm, t2r-prepare-mt) take."""
    parser.add_argument("--out", required=True, help="output directory (binaries go to OUT/bin)")
    parser.add_argument("--bpe-merges", type=int, default=DEFAULT_BPE_MERGES,
                        help=f"BPE merge operations learnt on the train split (default {DEFAULT_BPE_MERGES})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sampling and the train/valid/test split")
    parser.add_argument("--cache", help="download cache (default ~/.cache/fairseq_t2r or $FAIRSEQ_T2R_CACHE)")
    parser.add_argument("--workers", type=int, default=None, help="processes for tokenisation/binarize")


@contextmanager
def step(name: str):
    """Log how long a pipeline step took."""
    t0 = time.time()
    yield
    log(f"{name}: {time.time() - t0:.1f}s")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# --------------------------------------------------------------------------- splitting


def dedupe(items, key=None):
    """Drop repeated items (by ``key(item)``), keeping the first occurrence, order kept."""
    key = key or (lambda x: x)
    seen, out = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def subsample(items, n, seed: int):
    """A seeded sample of ``n`` items, in their original order (all items if ``n`` is None)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def split(items, seed: int, valid_frac=0.05, test_frac=0.05, min_eval=5, key=None):
    """Deterministic disjoint train/valid/test split.

    Items are deduplicated first (by ``key``), so no identical item can land in two splits;
    membership comes from ``random.Random(seed).shuffle``; each split keeps the original
    order of its items. valid/test get ``max(min_eval, frac * n)`` items each, capped so
    that train keeps at least half of the data.
    """
    items = dedupe(items, key)
    n = len(items)
    if n < 3:
        raise PrepError(f"split: only {n} distinct items, need at least 3: pass more data")

    def size(frac):
        return max(1, min(max(min_eval, round(frac * n)), n // 4))

    n_valid, n_test = size(valid_frac), size(test_frac)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    valid_idx = sorted(order[:n_valid])
    test_idx = sorted(order[n_valid:n_valid + n_test])
    train_idx = sorted(order[n_valid + n_test:])
    return {name: [items[i] for i in idx]
            for name, idx in (("train", train_idx), ("valid", valid_idx), ("test", test_idx))}


# --------------------------------------------------------------------------- BPE


def learn_bpe(train_texts, codes_path, merges: int, min_frequency: int = 2):
    """Learn (joint) BPE codes with subword-nmt on ``train_texts`` only.

    ``train_texts`` is a list of tokenised lines; for joint BPE pass the train lines of both
    languages. Nothing but these lines is seen by the learner.
    """
    import subword_nmt.learn_bpe as _lb

    codes_path = Path(codes_path)
    infile = io.StringIO("".join(line + "\n" for line in train_texts))
    progress = getattr(_lb, "tqdm", None)
    _lb.tqdm = lambda iterator, *args, **kwargs: iterator  # no progress bar in logs
    try:
        with open(codes_path, "w", encoding="utf-8") as out:
            _lb.learn_bpe(infile, out, merges, min_frequency=min_frequency)
    finally:
        if progress is not None:
            _lb.tqdm = progress
    return codes_path


def load_bpe(codes_path):
    from subword_nmt.apply_bpe import BPE

    with open(codes_path, encoding="utf-8") as f:
        return BPE(f)


def apply_bpe(bpe, lines):
    """Segment tokenised lines with a subword-nmt ``BPE`` object (from :func:`load_bpe`)."""
    return [bpe.process_line(line) for line in lines]


def bpe_merge_symbols(codes_path):
    """The set of symbols created by the merges of a codes file (``a`` + ``b`` -> ``ab``)."""
    out = set()
    with open(codes_path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#version"):
                continue
            parts = line.split()
            if len(parts) == 2:
                out.add(parts[0] + parts[1])
    return out


# --------------------------------------------------------------------------- I/O + binarize


def write_lines(path, lines):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line.replace("\n", " ") + "\n")
    return path


def binarize(out_dir, destdir, *, lm: bool, workers: int = 1, trainpref="train.bpe",
             validpref="valid.bpe", testpref="test.bpe", src="en", tgt="de"):
    """``fairseq-preprocess`` in this process (its ``main``: a process of its own cost ~4 s of CPU
    importing fairseq again); its report goes to ``DESTDIR/preprocess.log`` only, as it did then.

    LM: ``--only-source --task language_modeling``; MT: ``--source-lang SRC --target-lang TGT
    --joined-dictionary``. ``destdir`` is recreated from scratch.
    """
    import logging

    from fairseq_t2r.patches import hide_harmless_warnings  # noqa: F401  (before fairseq: hides its notices)

    out_dir, destdir = Path(out_dir), Path(destdir)
    if destdir.exists():
        shutil.rmtree(destdir)
    argv = ["--trainpref", str(out_dir / trainpref), "--validpref", str(out_dir / validpref),
            "--testpref", str(out_dir / testpref), "--destdir", str(destdir), "--workers", str(max(1, workers))]
    if lm:
        argv += ["--only-source", "--task", "language_modeling"]
    else:
        argv += ["--source-lang", src, "--target-lang", tgt, "--joined-dictionary"]
    log("binarize: fairseq-preprocess " + " ".join(argv))
    root, own = logging.getLogger(), logging.getLogger("fairseq_cli.preprocess")
    root_handlers, root_level = list(root.handlers), root.level
    own_handlers, own_level, own_propagate = list(own.handlers), own.level, own.propagate
    try:
        from fairseq import options
        from fairseq_cli import preprocess  # (its import may configure the root logger: undone below)

        root.setLevel(logging.WARNING)
        own.setLevel(logging.INFO)
        own.propagate = False  # its INFO lines to the log file it adds, not to this tool's output
        preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    except (Exception, SystemExit) as e:
        raise PrepError(f"fairseq-preprocess failed ({type(e).__name__}: {e}): check that fairseq imports in "
                        f"{sys.executable}") from e
    finally:
        for handler in own.handlers[len(own_handlers):]:  # the log file of this call
            handler.close()
        root.handlers[:], own.handlers[:] = root_handlers, own_handlers
        root.setLevel(root_level)
        own.setLevel(own_level)
        own.propagate = own_propagate
    return destdir


def copy_codes(codes_path, destdir):
    return Path(shutil.copy(codes_path, Path(destdir) / "bpe.codes"))


def count_words(lines):
    return sum(len(line.split()) for line in lines)


def dict_size(destdir, name="dict.txt"):
    path = Path(destdir) / name
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def write_stats(out: Path, stats: dict, bin_dir: Path, *, bpe_merges: int, seed: int, started: float,
                dict_name: str = "dict.txt") -> dict:
    """Add what every preparation records (BPE merges, dictionary size, seed, seconds) to ``stats``
    and write ``out/stats.json`` (atomically: a killed run leaves the previous file or none)."""
    import json

    from ..checkpoint import atomic_write

    stats["bpe_merges"] = bpe_merges
    stats["dict_size"] = dict_size(bin_dir, dict_name)
    stats["seed"] = seed
    stats["prep_seconds"] = round(time.time() - started, 1)
    atomic_write(out / "stats.json", json.dumps(stats, indent=1) + "\n")
    return stats
