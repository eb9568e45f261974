"""``t2r-prepare-mt``: EN-DE translation data (LibreOffice help) for fairseq.

    t2r-prepare-mt --out data/libreoffice-en-de [--src FILE --tgt FILE] [--max-pairs N]
                   [--bpe-merges N] [--seed S] [--cache DIR]

Writes ``OUT/{train,valid,test}.{raw,tok,bpe}.{en,de}``, joint ``OUT/bpe.codes`` and the
fairseq binaries in ``OUT/bin`` (``fairseq-preprocess --joined-dictionary``).
"""
import argparse
import sys
import time
from pathlib import Path

from ..interrupts import one_line_on_interrupt
from . import corpora, pipeline

SRC, TGT = "en", "de"


def read_parallel(src_file, tgt_file):
    src_file, tgt_file = Path(src_file), Path(tgt_file)
    for f in (src_file, tgt_file):
        if not f.is_file():
            raise corpora.PrepError(f"{f}: no such file")
    with open(src_file, encoding="utf-8", errors="replace") as f:
        src = [" ".join(line.split()) for line in f]
    with open(tgt_file, encoding="utf-8", errors="replace") as f:
        tgt = [" ".join(line.split()) for line in f]
    if len(src) != len(tgt):
        raise corpora.PrepError(f"--src {src_file} has {len(src)} lines but --tgt {tgt_file} has "
                                f"{len(tgt)}: pass line-aligned files")
    return list(zip(src, tgt))


def prepare_mt(out, src_file=None, tgt_file=None, max_pairs=None, bpe_merges=pipeline.DEFAULT_BPE_MERGES,
               seed=1, cache=None, valid_frac=0.05, test_frac=0.05, workers=None, verbose=True):
    """Prepare EN-DE data into ``out``; returns the fairseq data dir ``out/bin``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or pipeline.default_workers()
    if (src_file is None) != (tgt_file is None):
        raise corpora.PrepError("pass both --src FILE and --tgt FILE, or neither")
    if src_file is not None:
        pairs, stats = read_parallel(src_file, tgt_file), {"src_file": str(src_file),
                                                          "tgt_file": str(tgt_file)}
    else:
        t0 = time.time()
        pairs, lo_stats = corpora.fetch_libreoffice_en_de(cache)
        stats = {"libreoffice": {**lo_stats, "seconds": round(time.time() - t0, 1)}}
    pairs = pipeline.dedupe(p for p in pairs if p[0] and p[1])
    pairs = pipeline.subsample(pairs, max_pairs, seed)

    t0 = time.time()
    with pipeline.step(f"tokenize {len(pairs)} pairs (sacremoses en/de, {workers} workers)"):
        tok_src = pipeline.tokenize([s for s, _ in pairs], SRC, workers=workers)
        tok_tgt = pipeline.tokenize([t for _, t in pairs], TGT, workers=workers)
    items = [(s, t, ts, tt) for (s, t), ts, tt in zip(pairs, tok_src, tok_tgt)
             if ts.strip() and tt.strip()]
    splits = pipeline.split(items, seed, valid_frac, test_frac, key=lambda it: (it[2], it[3]))
    for name, part in splits.items():
        pipeline.write_lines(out / f"{name}.raw.{SRC}", [it[0] for it in part])
        pipeline.write_lines(out / f"{name}.raw.{TGT}", [it[1] for it in part])
        pipeline.write_lines(out / f"{name}.tok.{SRC}", [it[2] for it in part])
        pipeline.write_lines(out / f"{name}.tok.{TGT}", [it[3] for it in part])

    train = splits["train"]
    with pipeline.step(f"learn joint BPE ({bpe_merges} merges) on train.{SRC} + train.{TGT}"):
        codes = pipeline.learn_bpe([it[2] for it in train] + [it[3] for it in train],
                                   out / "bpe.codes", bpe_merges)
    with pipeline.step("apply BPE to train/valid/test"):
        bpe = pipeline.load_bpe(codes)
        for name, part in splits.items():
            for lang, col in ((SRC, 2), (TGT, 3)):
                pipeline.write_lines(out / f"{name}.bpe.{lang}",
                                     pipeline.apply_bpe(bpe, [it[col] for it in part]))
    with pipeline.step("fairseq-preprocess"):
        bin_dir = pipeline.binarize(out, out / "bin", lm=False, workers=workers, src=SRC, tgt=TGT)
    pipeline.copy_codes(codes, bin_dir)

    stats["splits"] = {
        name: {"pairs": len(part), f"{SRC}_words": pipeline.count_words(it[2] for it in part),
               f"{TGT}_words": pipeline.count_words(it[3] for it in part)}
        for name, part in splits.items()}
    pipeline.write_stats(out, stats, bin_dir, bpe_merges=bpe_merges, seed=seed, started=t0, dict_name=f"dict.{SRC}.txt")
    if verbose:
        print(format_stats(stats, bin_dir))
    return bin_dir


def format_stats(stats, bin_dir):
    lines = []
    if "libreoffice" in stats:
        s = stats["libreoffice"]
        lines.append(f"LibreOffice help {s['version']}: {s['pages_aligned']} page pairs, "
                     f"{s['aligned']} aligned paragraphs -> {s['pairs']} pairs after filtering "
                     f"(empty {s['dropped_empty']}, identical {s['dropped_identical']}, overlong "
                     f"{s['dropped_overlong']}, ratio {s['dropped_ratio']}, duplicate "
                     f"{s['dropped_duplicate']}); {s['en_words']} EN / {s['de_words']} DE words "
                     f"({s['seconds']}s)")
    else:
        lines.append(f"text: {stats['src_file']} / {stats['tgt_file']}")
    for name, s in stats["splits"].items():
        lines.append(f"{name}: {s['pairs']} pairs, {s[f'{SRC}_words']} {SRC} / "
                     f"{s[f'{TGT}_words']} {TGT} tokens")
    lines.append(f"joint BPE merges: {stats['bpe_merges']}, joined dictionary: "
                 f"{stats['dict_size']} types")
    lines.append(f"fairseq data: {bin_dir}")
    return "\n".join(lines)


def get_parser():
    p = argparse.ArgumentParser(prog="t2r-prepare-mt", description=__doc__.split("\n")[0])
    pipeline.add_common_options(p)
    p.add_argument("--src", help="English side, one segment per line (with --tgt) instead of "
                   "the LibreOffice help from apt")
    p.add_argument("--tgt", help="German side, line-aligned with --src")
    p.add_argument("--max-pairs", type=int, help="keep a seeded sample of N distinct pairs")
    return p


@one_line_on_interrupt("t2r-prepare-mt", "the output folder is incomplete: rerun the same command to prepare it again "
                                       "from the start")
def cli_main(argv=None):
    args = get_parser().parse_args(argv)
    prepare_mt(args.out, src_file=args.src, tgt_file=args.tgt, max_pairs=args.max_pairs,
               bpe_merges=args.bpe_merges, seed=args.seed, cache=args.cache, workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
