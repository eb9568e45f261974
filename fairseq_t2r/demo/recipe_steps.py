"""The steps of one finetuning arm, by its recipe (``Variant.recipe``): plain finetuning (with
distillation for ``distill``), attention transfer then finetuning, a measured layer choice then
finetuning, or T2R from random init. Each takes the task's plan (``plan.TaskPlan``, which imports
this module: it is not imported back) and returns the run's steps.
"""
from typing import List

from . import presets
from .runner import Step
from .variants import Variant


def finetune(plan, name: str, variant: Variant, seed: int, teacher_dep: List[str]) -> List[Step]:
    """Swap + finetune as ``variant`` says, from the teacher (the control: finetune it unchanged)."""
    p = plan.preset
    flags = plan.train_flags(plan.save_dir(name), p.ft_updates, presets.FINETUNE_LR,
                             presets.warmup(p.ft_updates, presets.FINETUNE_WARMUP_SHARE), seed)
    flags += plan.student_flags(variant) + ["--finetune-from-model", plan.teacher_path]
    if variant.recipe == "distill":  # the teacher's distribution joins the task loss
        flags = _without_criterion(flags) + ["--criterion", "t2r_distillation", "--t2r-teacher", plan.teacher_path]
        flags += ["--label-smoothing", presets.LABEL_SMOOTHING] if plan.kind == "mt" else []
    flags += plan.bleu_curve_flags()  # every arm: the report's BLEU panel shows them all
    return [Step(f"{plan.kind}/{name}", f"{variant.label} ({p.ft_updates} updates, seed {seed})",
                 "fairseq_cli.train", flags, deps=teacher_dep)]


def transfer(plan, name: str, variant: Variant, seed: int, teacher_dep: List[str]) -> List[Step]:
    """Attention transfer (stage one), then finetuning for the rest of the finetuning budget."""
    k, p = plan.kind, plan.preset
    stage = plan.stage_name(name, variant)
    stage1 = plan.train_flags(plan.save_dir(stage), p.transfer_updates, presets.TRANSFER_LR,
                              presets.TRANSFER_WARMUP, seed)
    stage1 = _without_criterion(stage1) + plan.student_flags(variant)
    stage1 += ["--finetune-from-model", plan.teacher_path, "--criterion", "t2r_attention_transfer"]
    rest = p.ft_updates - p.transfer_updates
    stage2 = plan.train_flags(plan.save_dir(name), rest, presets.FINETUNE_LR,
                                presets.warmup(rest, presets.FINETUNE_WARMUP_SHARE), seed)
    stage2 += plan.student_flags(variant) + ["--finetune-from-model", plan.checkpoint(stage)]
    stage2 += plan.bleu_curve_flags()
    return [Step(f"{k}/{stage}", f"attention transfer: train only the feature maps to mimic "
                 f"softmax attention ({p.transfer_updates} updates, seed {seed})", "fairseq_cli.train", stage1,
                 deps=teacher_dep),
            Step(f"{k}/{name}", f"finetune after attention transfer ({rest} updates, seed {seed})",
                 "fairseq_cli.train", stage2, deps=[f"{k}/{stage}"])]


def select(plan, name: str, variant: Variant, seed: int, teacher_dep: List[str]) -> List[Step]:
    """t2r-convert keeps one layer softmax by ``variant.select`` (with attention transfer, the
    transfer recipe's stage one), then finetuning from it for the rest of the budget."""
    k, p = plan.kind, plan.preset
    stage = plan.stage_name(name, variant)
    convert = [plan.teacher_path, plan.checkpoint(stage), "--t2r-feature-map", variant.feature_map,
               "--t2r-feature-dim", str(p.feature_dim), *variant.flags, "--t2r-keep-softmax", "1",
               "--t2r-select", variant.select, "--transfer-data", str(plan.bin), "--transfer-updates",
               str(p.transfer_updates), "--transfer-lr", str(presets.TRANSFER_LR), "--transfer-max-tokens",
               str(p.max_tokens), "--seed", str(seed), "--force"]
    rest = p.ft_updates - p.transfer_updates
    stage2 = plan.train_flags(plan.save_dir(name), rest, presets.FINETUNE_LR,
                                presets.warmup(rest, presets.FINETUNE_WARMUP_SHARE), seed)
    # no --t2r-layers: the layers are the selected checkpoint's (models/from_checkpoint.py)
    stage2 += plan.student_flags(variant) + ["--finetune-from-model", plan.checkpoint(stage)]
    return [Step(f"{k}/{stage}", f"choose the softmax layer by {variant.select}, with attention transfer "
                 f"({p.transfer_updates} updates, seed {seed})", "fairseq_t2r.convert", convert,
                 deps=teacher_dep, cost=p.transfer_updates),
            Step(f"{k}/{name}", f"finetune the {variant.select}-chosen hybrid ({rest} updates, seed {seed})",
                 "fairseq_cli.train", stage2, deps=[f"{k}/{stage}"])]


def scratch(plan, name: str, variant: Variant, seed: int, teacher_dep: List[str]) -> List[Step]:
    """T2R from random init for the teacher's budget plus the finetuning one (needs the data, not the teacher)."""
    k, p = plan.kind, plan.preset
    updates = plan.teacher_updates + p.ft_updates
    # the teacher's schedule (its rate and warmup), over the longer budget
    flags = plan.train_flags(plan.save_dir(name), updates, presets.TEACHER_LR, plan.teacher_warmup(), seed, anneal=True)
    return [Step(f"{k}/{name}", f"train T2R from random init ({updates} updates, seed {seed})", "fairseq_cli.train",
                 flags + plan.student_flags(variant), deps=[f"{k}/data"])]


def _without_criterion(flags: List[str]) -> List[str]:
    """``flags`` without the translation's label-smoothed criterion (another criterion replaces it)."""
    if "--criterion" not in flags:
        return flags
    i = flags.index("--criterion")
    return flags[:i] + flags[i + 4:]


RECIPES = {"finetune": finetune, "distill": finetune, "transfer": transfer, "select": select, "scratch": scratch}
