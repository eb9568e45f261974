"""``t2r-prepare-lm``: English LM data (State of the Union + Brown corpus) for fairseq.

    t2r-prepare-lm --out data/sotu-brown [--text FILE] [--max-lines N] [--bpe-merges N]
                   [--seed S] [--cache DIR]

Writes ``OUT/{train,valid,test}.{raw,tok,bpe}``, ``OUT/bpe.codes`` and the fairseq binaries
in ``OUT/bin`` (``fairseq-preprocess --only-source --task language_modeling``).
"""
import argparse
import sys
import time
from pathlib import Path

from ..interrupts import one_line_on_interrupt
from . import corpora, pipeline


def registry_lines(cache=None):
    """SOTU (split into sentences) followed by Brown sentences, one per line, + stats."""
    t0 = time.time()
    docs = corpora.fetch_sotu(cache)
    sotu = [s for doc in docs for s in corpora.split_sentences(doc)]
    t_sotu = time.time() - t0
    t0 = time.time()
    brown = corpora.fetch_brown(cache)
    t_brown = time.time() - t0
    stats = {
        "sotu": {"package": f"{corpora.SOTU_PACKAGE}@{corpora.SOTU_VERSION}", "documents": len(docs),
                 "lines": len(sotu), "words": pipeline.count_words(sotu), "seconds": round(t_sotu, 1)},
        "brown": {"package": f"{corpora.BROWN_PACKAGE}@{corpora.BROWN_VERSION}",
                  "sentences": len(brown), "words": pipeline.count_words(brown),
                  "seconds": round(t_brown, 1)},
    }
    return sotu + brown, stats


def read_text_file(path):
    path = Path(path)
    if not path.is_file():
        raise corpora.PrepError(f"--text {path}: no such file")
    with open(path, encoding="utf-8", errors="replace") as f:
        return [" ".join(line.split()) for line in f]


def prepare_lm(out, text_file=None, max_lines=None, bpe_merges=pipeline.DEFAULT_BPE_MERGES, seed=1,
               cache=None, valid_frac=0.05, test_frac=0.05, workers=None, verbose=True):
    """Prepare LM data into ``out``; returns the fairseq data dir ``out/bin``.

    Statistics are written to ``out/stats.json`` (and printed when ``verbose``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or pipeline.default_workers()
    if text_file is not None:
        lines, stats = read_text_file(text_file), {"text_file": str(text_file)}
    else:
        lines, stats = registry_lines(cache)
    lines = pipeline.dedupe(line for line in lines if line)
    lines = pipeline.subsample(lines, max_lines, seed)

    t0 = time.time()
    with pipeline.step(f"tokenize {len(lines)} lines (sacremoses en, {workers} workers)"):
        toks = pipeline.tokenize(lines, "en", workers=workers)
    items = [(raw, tok) for raw, tok in zip(lines, toks) if tok.strip()]
    splits = pipeline.split(items, seed, valid_frac, test_frac, key=lambda it: it[1])
    for name, part in splits.items():
        pipeline.write_lines(out / f"{name}.raw", [raw for raw, _ in part])
        pipeline.write_lines(out / f"{name}.tok", [tok for _, tok in part])

    with pipeline.step(f"learn BPE ({bpe_merges} merges) on train only"):
        codes = pipeline.learn_bpe([tok for _, tok in splits["train"]], out / "bpe.codes",
                                   bpe_merges)
    with pipeline.step("apply BPE to train/valid/test"):
        bpe = pipeline.load_bpe(codes)
        for name, part in splits.items():
            pipeline.write_lines(out / f"{name}.bpe",
                                 pipeline.apply_bpe(bpe, [tok for _, tok in part]))
    with pipeline.step("fairseq-preprocess"):
        bin_dir = pipeline.binarize(out, out / "bin", lm=True, workers=workers)
    pipeline.copy_codes(codes, bin_dir)

    stats["splits"] = {name: {"lines": len(part), "words": pipeline.count_words(t for _, t in part)}
                       for name, part in splits.items()}
    pipeline.write_stats(out, stats, bin_dir, bpe_merges=bpe_merges, seed=seed, started=t0)
    if verbose:
        print(format_stats(stats, bin_dir))
    return bin_dir


def format_stats(stats, bin_dir):
    lines = []
    if "sotu" in stats:
        s, b = stats["sotu"], stats["brown"]
        lines.append(f"SOTU ({s['package']}): {s['documents']} documents, {s['lines']} lines, "
                     f"{s['words']} words ({s['seconds']}s)")
        lines.append(f"Brown ({b['package']}): {b['sentences']} sentences, {b['words']} words "
                     f"({b['seconds']}s)")
    else:
        lines.append(f"text: {stats['text_file']}")
    for name, s in stats["splits"].items():
        lines.append(f"{name}: {s['lines']} lines, {s['words']} tokens")
    lines.append(f"BPE merges: {stats['bpe_merges']}, dictionary: {stats['dict_size']} types")
    lines.append(f"fairseq data: {bin_dir}")
    return "\n".join(lines)


def get_parser():
    p = argparse.ArgumentParser(prog="t2r-prepare-lm", description=__doc__.split("\n")[0])
    pipeline.add_common_options(p)
    p.add_argument("--text", help="plain text file, one sentence/paragraph per line, instead of "
                   "SOTU + Brown from npm")
    p.add_argument("--max-lines", type=int, help="keep a seeded sample of N distinct lines")
    return p


@one_line_on_interrupt("t2r-prepare-lm", "the output folder is incomplete: rerun the same command to prepare it again "
                                       "from the start")
def cli_main(argv=None):
    args = get_parser().parse_args(argv)
    prepare_lm(args.out, text_file=args.text, max_lines=args.max_lines,
               bpe_merges=args.bpe_merges, seed=args.seed, cache=args.cache, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
