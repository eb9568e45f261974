"""The demo's evaluation steps: the task metric of every model (stock fairseq-eval-lm and
fairseq-generate) and its faithfulness to the teacher (``faithfulness.py``)."""
from typing import List

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
