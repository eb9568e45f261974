"""``--criterion t2r_distillation``: task loss + ``--t2r-kd-weight`` x KL(teacher || student).

The task loss is fairseq's: cross-entropy, or label-smoothed cross-entropy when
``--label-smoothing`` > 0 (``label_smoothed_nll_loss``, as ``label_smoothed_cross_entropy``).
The KL term is sum_v p_teacher(v) (log p_teacher(v) - log p_student(v)) per target token,
padding excluded, summed like the task loss, so fairseq's division by ``sample_size`` treats both
alike. Logged per token in bits as fairseq does: ``loss``, ``nll_loss``, ``kd_loss``, ``ppl``.

The teacher is a frozen fairseq checkpoint (``--t2r-teacher PATH``, normally the softmax model
the student was swapped from), built with the student's task -- so with its dictionaries --
and loaded strictly. It is held outside the criterion's module tree: it never reaches the
optimizer, is not saved in checkpoints, stays in eval mode (no dropout) and runs without
autograd; it follows the student's device and dtype (e.g. ``--fp16``) at the first forward.
"""
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from .. import checkpoint
from ..errors import T2RUserError

logger = logging.getLogger("fairseq_t2r")


@dataclass
class DistillationConfig(FairseqDataclass):
    t2r_teacher: Optional[str] = field(
        default=None, metadata={"help": "fairseq checkpoint of the frozen teacher (usually the softmax model)"}
    )
    t2r_kd_weight: float = field(
        default=1.0, metadata={"help": "weight of KL(teacher || student), added to the task loss"}
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing of the task loss, 0 means plain cross-entropy"}
    )
    sentence_avg: bool = II("optimization.sentence_avg")


def _vocab_checks(path, state_dict, task):
    """Stop before building the teacher when its embeddings cannot fit the task's dictionaries
    (fairseq would fail later with a size-mismatch traceback)."""
    sides = (("decoder.embed_tokens.weight", "target", getattr(task, "target_dictionary", None)),
             ("encoder.embed_tokens.weight", "source", getattr(task, "source_dictionary", None)))
    for key, side, dictionary in sides:
        tensor = state_dict.get(key)
        if tensor is not None and dictionary is not None and tensor.size(0) != len(dictionary):
            raise T2RUserError(
                f"--t2r-teacher {path} has a {side} vocabulary of {tensor.size(0)} entries but the task's "
                f"dictionary has {len(dictionary)}: distil from a teacher trained on the same binarized data (same dict files)"
            )


def load_teacher(path, task):
    from fairseq import models

    if not path:
        raise T2RUserError("--criterion t2r_distillation needs --t2r-teacher PATH: the fairseq checkpoint to distil from")
    if checkpoint.is_local(path) and not os.path.exists(path):
        raise T2RUserError(f"--t2r-teacher {path} does not exist: pass the path of the (softmax) teacher checkpoint")
    state = checkpoint.load(path, upgrade=True)  # as fairseq reads it: cfg.model builds the model
    _vocab_checks(path, state["model"], task)
    cfg = state["cfg"]
    # models.build_model, not task.build_model: a task may keep state about "its" model
    # (translation's --eval-bleu generator), which must stay the student's
    teacher = models.build_model(cfg.model, task, from_checkpoint=True)
    teacher.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    logger.info(f"t2r_distillation: teacher {path} ({type(teacher).__name__}, "
                f"{sum(p.numel() for p in teacher.parameters()):,} parameters, frozen)")
    return teacher


@register_criterion("t2r_distillation", dataclass=DistillationConfig)
class DistillationCriterion(FairseqCriterion):
    def __init__(self, task, sentence_avg, t2r_teacher=None, t2r_kd_weight=1.0, label_smoothing=0.0):
        super().__init__(task)
        if t2r_kd_weight < 0 or not 0 <= label_smoothing < 1:
            raise T2RUserError(f"--t2r-kd-weight must be >= 0 and --label-smoothing in [0, 1): got {t2r_kd_weight}, {label_smoothing}")
        self.sentence_avg = sentence_avg
        self.kd_weight = t2r_kd_weight
        self.eps = label_smoothing
        # a tuple, not an attribute module: the teacher must not join the criterion's parameters
        # (fairseq gives those to the optimizer and saves them in checkpoints)
        self._teacher = (load_teacher(t2r_teacher, task),)

    @property
    def teacher(self):
        return self._teacher[0]

    def _teacher_like(self, model):
        ref = next(p for p in model.parameters() if p.is_floating_point())
        own = next(self.teacher.parameters())
        if own.device != ref.device or own.dtype != ref.dtype:
            self.teacher.to(device=ref.device, dtype=ref.dtype)
        return self.teacher

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        teacher = self._teacher_like(model)
        with torch.no_grad():
            teacher_lprobs = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True)
        if teacher_lprobs.shape != lprobs.shape:
            raise T2RUserError(
                f"--t2r-teacher predicts {teacher_lprobs.size(-1)} classes but the student {lprobs.size(-1)}: "
                f"distil from a teacher trained on the same binarized data (same dict files)"
            )
        vocab = lprobs.size(-1)
        lprobs, teacher_lprobs, target = lprobs.view(-1, vocab), teacher_lprobs.view(-1, vocab), target.view(-1)
        loss, nll_loss = label_smoothed_nll_loss(lprobs, target, self.eps, ignore_index=self.padding_idx, reduce=reduce)
        kd = F.kl_div(lprobs, teacher_lprobs.to(lprobs.dtype), reduction="none", log_target=True).sum(-1)
        kd = kd.masked_fill(target.eq(self.padding_idx), 0.0)
        kd = kd.sum() if reduce else kd.unsqueeze(-1)
        loss = loss + self.kd_weight * kd
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "kd_loss": kd.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        total = {k: sum(log.get(k, 0) for log in logging_outputs) for k in ("loss", "nll_loss", "kd_loss", "ntokens", "sample_size")}
        ln2 = math.log(2)
        metrics.log_scalar("loss", total["loss"] / total["sample_size"] / ln2, total["sample_size"], round=3)
        metrics.log_scalar("nll_loss", total["nll_loss"] / total["ntokens"] / ln2, total["ntokens"], round=3)
        metrics.log_scalar("kd_loss", total["kd_loss"] / total["ntokens"] / ln2, total["ntokens"], round=5)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
