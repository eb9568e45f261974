"""The demo's evaluation steps: the task metric of every model (stock fairseq-eval-lm and
fairseq-generate), its faithfulness to the teacher (``faithfulness.py``), and where each arm loses
(``t2r-compare``, ``fairseq_t2r/compare/``)."""
from typing import List

from ..compare.run import LM_PROBES, MT_PROBES
from . import presets
from .runner import Step, logfile


def eval_step(plan, name: str, deps: List[str], subset: str = "test") -> Step:
    ckpt = plan.checkpoint(name)
    if plan.kind == "lm":
        return Step(f"lm/eval_{name}", f"test perplexity of {name}", "fairseq_cli.eval_lm",
                    [str(plan.bin), "--user-dir", plan.user_dir, "--path", ckpt, "--gen-subset", "test",
                     "--tokens-per-sample", str(plan.preset.tokens_per_sample), "--max-tokens", presets.EVAL_MAX_TOKENS,
                     "--num-workers", "0"], deps=deps)
    suffix = "" if subset == "test" else f"_{subset}"
    return Step(f"mt/eval_{name}{suffix}", f"translate the {subset} set with {name} (beam {presets.BEAM})",
                "fairseq_cli.generate",
                [str(plan.bin), "--user-dir", plan.user_dir, "--path", ckpt, "--gen-subset", subset,
                 "--source-lang", "en", "--target-lang", "de", "--beam", str(presets.BEAM),
                 "--batch-size", presets.GEN_BATCH_SIZE, "--required-batch-size-multiple", "1",
                 "--tokenizer", "moses", "--bpe", "subword_nmt", "--bpe-codes", str(plan.data_dir / "bpe.codes"),
                 "--num-workers", "0"], deps=deps)


def faithfulness_step(plan, name: str, deps: List[str]) -> Step:
    """How close run ``name`` stays to its teacher: LM next-token top-1 agreement and
    KL(teacher || model) on the test set; MT BLEU of its beam output against the teacher's."""
    k, out = plan.kind, str(plan.dir / "faithfulness" / f"{name}.json")
    if k == "lm":
        args = ["lm", plan.teacher_path, plan.checkpoint(name), str(plan.bin), "--tokens-per-sample",
                str(plan.preset.tokens_per_sample), "--out", out]
    else:
        args = ["mt", str(logfile(plan.out, f"mt/eval_{name}")), str(logfile(plan.out, "mt/eval_teacher")),
                "--out", out]
        deps = [f"mt/eval_{name}", "mt/eval_teacher"]
    return Step(f"{k}/faithfulness_{name}", f"faithfulness of {name} to the teacher", "fairseq_t2r.demo.faithfulness",
                args, deps=deps)


def compare_step(plan, teacher_dep: List[str]) -> Step:
    """Where each arm loses against the teacher (t2r-compare) on the first seed's run of every arm, ratios
    against the control when there is one; fewer trials at --quick."""
    k = plan.kind
    names = [name for name, _, seed in plan.runs() if seed == plan.seeds[0]]
    args = [plan.teacher_path, *[plan.checkpoint(n) for n in names], "--data", str(plan.bin),
            "--out", str(plan.dir / "compare"), "--names", ",".join(names), "--force",
            "--baseline", "control" if "control" in names else "teacher"]
    # no decoding speed per arm (the speed step times the teacher and T2R): it took a third of the step's time
    args += ["--probes", ",".join(p for p in (LM_PROBES if k == "lm" else MT_PROBES) if p != "speed")]
    args += ["--quick"] if plan.preset.compare_quick else []
    # translation: 200 sentences (the demo's 7000 pairs leave ~350), within the 30 minutes of the default run
    args += ["--max-sentences", "200"] if k == "mt" and not plan.preset.compare_quick else []
    return Step(f"{k}/compare", "where each arm loses against the teacher (t2r-compare)", "fairseq_t2r.compare",
                args, deps=[*teacher_dep, *[f"{k}/{n}" for n in names]])

