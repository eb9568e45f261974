"""t2r-compare: where a converted model loses against its softmax teacher, on your own data.

    t2r-compare TEACHER CONVERTED [CONVERTED ...] --data DATA_BIN [--out DIR]

The task (language model or translation) is read from the checkpoints. Language models: recall
tokens against the rest, copying, passkey, perplexity by context length, generation; translation:
BLEU and chrF by source length and on documents of joined sentences; both: decoding time per
token and state size. Writes DIR/report.md, DIR/results.json and DIR/compare.png, printing one
line per step; an existing report is kept unless ``--force``.
"""
import argparse
import shlex
import sys
from pathlib import Path

from ..errors import T2RUserError
from ..interrupts import one_line_on_interrupt
from . import report
from .run import LM_PROBES, MT_PROBES, compare, model_names


def build_parser():
    p = argparse.ArgumentParser(prog="t2r-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("teacher", help="the softmax checkpoint the models were converted from")
    p.add_argument("converted", nargs="+", help="converted checkpoints (T2R, or softmax ones such as a control)")
    p.add_argument("--data", required=True, help="the fairseq-preprocess folder the models were trained on")
    p.add_argument("--out", default="t2r-compare", help="folder for report.md, results.json, compare.png")
    p.add_argument("--names", help="comma-separated names of the converted models (default: their folders)")
    p.add_argument("--baseline", default="teacher",
                   help="the model the report's ratios are against (a name: teacher, or one of --names)")
    p.add_argument("--probes", help=f"comma-separated subset: LM {','.join(LM_PROBES)}; translation {','.join(MT_PROBES)}")
    p.add_argument("--subset", default="test", help="the split scored (default test)")
    p.add_argument("--max-sentences", type=int, help="translation: test sentences translated (default 400; --quick 48)")
    p.add_argument("--quick", action="store_true", help="fewer trials and sentences (a smoke run)")
    p.add_argument("--force", action="store_true", help="replace an existing report in --out")
    return p


def check(args):
    for path in [args.teacher, *args.converted]:
        if not Path(path).is_file():
            raise T2RUserError(f"{path} does not exist: give the teacher's checkpoint, then the converted ones")
    names = [n.strip() for n in args.names.split(",")] if args.names else model_names(args.converted)
    if len(names) != len(args.converted) or len(set(names)) != len(names) or "teacher" in names:
        raise T2RUserError(f"--names {args.names}: give one distinct name per converted model, not 'teacher'")
    if args.baseline not in ["teacher", *names]:
        raise T2RUserError(f"--baseline {args.baseline} is none of the models: choose from teacher, {', '.join(names)}")
    probes = [p.strip() for p in args.probes.split(",")] if args.probes else None
    unknown = [p for p in probes or [] if p not in LM_PROBES + MT_PROBES]
    if unknown:
        raise T2RUserError(f"--probes: unknown {', '.join(unknown)}; choose from {', '.join(LM_PROBES + MT_PROBES)}")
    if args.max_sentences is not None and args.max_sentences < 8:
        raise T2RUserError(f"--max-sentences {args.max_sentences}: give at least 8 (four length buckets of two)")
    if (Path(args.out) / "report.md").exists() and not args.force:
        raise T2RUserError(f"{args.out}/report.md exists: pass another --out, or --force to replace it")
    return names, probes


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    names, probes = check(args)
    res = compare(args.teacher, args.converted, args.data, names=names, probes=probes, subset=args.subset,
                  quick=args.quick, max_sentences=args.max_sentences, say=lambda line: print(line, flush=True))
    command = "t2r-compare " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    report.write(Path(args.out), res, args.baseline, command)
    print(f"[t2r-compare] wrote {args.out}/report.md, results.json, compare.png "
          f"({res['seconds']['total']:.0f} s)", flush=True)
    return res


@one_line_on_interrupt("t2r-compare", "nothing was written; rerun the same command")
def cli_main(argv=None):
    import logging

    from .. import patches  # noqa: F401  quiet fairseq before it is imported

    # fairseq's own INFO lines (checkpoint loads) stay; matplotlib's font search does not
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    main(argv)


if __name__ == "__main__":
    cli_main()
