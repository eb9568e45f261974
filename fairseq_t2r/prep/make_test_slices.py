"""Regenerate the small real-data slices committed under ``tests/data``.

    python -m fairseq_t2r.prep.make_test_slices [--dest tests/data] [--cache DIR] [--seed 0]

Writes ``lm/english.txt`` (1500 SOTU sentences + 1500 Brown sentences, raw text) and
``mt/libreoffice.en`` / ``mt/libreoffice.de`` (4000 aligned LibreOffice help pairs), each a
seeded sample of lines of at most ``--max-words`` words, in corpus order.
"""
import argparse
from pathlib import Path

from . import corpora, pipeline


def short(lines, max_words):
    return [line for line in lines if 0 < len(line.split()) <= max_words]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", default="tests/data")
    p.add_argument("--cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lm-lines", type=int, default=1500, help="lines per LM source")
    p.add_argument("--mt-pairs", type=int, default=4000)
    p.add_argument("--max-words", type=int, default=40)
    args = p.parse_args(argv)
    dest = Path(args.dest)

    sotu = [s for doc in corpora.fetch_sotu(args.cache) for s in corpora.split_sentences(doc)]
    brown = corpora.fetch_brown(args.cache)
    lm = (pipeline.subsample(pipeline.dedupe(short(sotu, args.max_words)), args.lm_lines, args.seed)
          + pipeline.subsample(pipeline.dedupe(short(brown, args.max_words)), args.lm_lines,
                               args.seed))
    path = pipeline.write_lines(dest / "lm" / "english.txt", lm)
    print(f"{path}: {len(lm)} lines, {pipeline.count_words(lm)} words, {path.stat().st_size} bytes")

    pairs, _ = corpora.fetch_libreoffice_en_de(args.cache)
    pairs = [(en, de) for en, de in pairs
             if len(en.split()) <= args.max_words and len(de.split()) <= args.max_words]
    pairs = pipeline.subsample(pairs, args.mt_pairs, args.seed)
    for i, lang in enumerate(("en", "de")):
        side = [pair[i] for pair in pairs]
        path = pipeline.write_lines(dest / "mt" / f"libreoffice.{lang}", side)
        print(f"{path}: {len(side)} lines, {pipeline.count_words(side)} words, "
              f"{path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
