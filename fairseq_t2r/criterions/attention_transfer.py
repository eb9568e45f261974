"""``--criterion t2r_attention_transfer``: stage one of the conversion (attention transfer).

Trains only the feature maps, so that every converted attention's linear output matches the
softmax attention output computed from the same q, k, v projections -- which the swap copied
from the softmax model, so the teacher is the model itself and no second model is loaded.

Per converted module (decoder self-attention ``transfer_l{i}``, cross-attention
``transfer_l{i}_cross``) the loss is the squared error between the per-head outputs *before*
``out_proj`` (B, H, T, D), averaged over heads and head dimensions and summed over the
non-padded decoder positions; fairseq divides by ``sample_size`` (those positions), so the
logged ``transfer_l{i}`` is the mean squared error per element. Comparing before ``out_proj``
keeps the target independent of the output projection's scale and is what the feature map
alone controls. ``loss`` is the sum over modules, plus ``--t2r-transfer-xent-weight`` times the
cross-entropy -sum_j a_softmax_ij log a_linear_ij between the two weight matrices (``transfer_xent``,
per position, averaged over heads): it materialises (T, S) weights per head, as the softmax does.
A decayed or gated state's linear weights include its gates (``modules.transfer.linear_weights``);
the delta rule's and the RMS norm's are not distributions, so the term is refused for them.

While the criterion runs a forward, every T2R module records into a ``TransferRecord`` and passes
on the *softmax* output (see ``modules/transfer.py``), so each layer sees the softmax model's
hidden states and each map is fitted to its own layer independently. Attention dropout is off on
both sides.

Everything but the feature maps is frozen when the criterion is built -- fairseq-train builds
it right after the model and before the optimizer -- so no other parameter reaches the
optimizer and all of them keep their bits (see ``models/trainable.py``).
"""
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from .. import patches
from ..checkpoint import is_new_tensor
from ..errors import T2RUserError
from ..models import trainable
from ..modules.transfer import Recordable, recording, weights_are_distributions

LOG_PREFIX = "transfer_"
TINY = 1e-6  # floor of the linear weights inside the log: a zero weight where softmax has mass


@dataclass
class AttentionTransferConfig(FairseqDataclass):
    t2r_transfer_xent_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the cross-entropy between softmax and linear attention weights, added to "
                  "the output MSE (0: off). Builds (T, S) weight matrices per head: short sequences only"},
    )


def decoder_input(sample):
    net_input = sample["net_input"]
    # translation: prev_output_tokens; language modelling: src_tokens is the decoder's input
    return net_input["prev_output_tokens"] if "prev_output_tokens" in net_input else net_input["src_tokens"]


def _check_xent(model) -> None:
    """The cross-entropy compares weights as distributions: refuse states whose weights are not."""
    for m in model.modules():
        if isinstance(m, Recordable) and not weights_are_distributions(m):
            su = m.state_update
            raise T2RUserError(
                f"--t2r-transfer-xent-weight compares attention weights as distributions, which those of "
                f"--t2r-state {su.state} --t2r-norm {su.norm} are not (the delta rule's are signed, the RMS norm "
                f"normalises outputs): use --t2r-transfer-xent-weight 0 (the output MSE alone)"
            )


@register_criterion("t2r_attention_transfer", dataclass=AttentionTransferConfig)
class AttentionTransferCriterion(FairseqCriterion):
    def __init__(self, task, t2r_transfer_xent_weight=0.0):
        super().__init__(task)
        if t2r_transfer_xent_weight < 0:
            raise T2RUserError(f"--t2r-transfer-xent-weight must be >= 0, got {t2r_transfer_xent_weight}")
        self.xent_weight = t2r_transfer_xent_weight
        models = patches.built_models(task)
        if not models:
            raise T2RUserError(
                "--criterion t2r_attention_transfer trains the feature maps of a T2R model, but no T2R model "
                "was built: use --arch t2r_ARCH (e.g. t2r_transformer_lm) with --finetune-from-model SOFTMAX.pt"
            )
        for model in models:  # fairseq-train builds one; an ensemble (fairseq-validate) gets them all
            trainable.restrict_training(model, "feature-map", "attention transfer (--criterion t2r_attention_transfer)")
            if t2r_transfer_xent_weight > 0:
                _check_xent(model)

    def forward(self, model, sample, reduce=True):
        frozen_wrongly = [n for n, p in model.named_parameters() if p.requires_grad and not is_new_tensor(n)]
        if frozen_wrongly:
            raise T2RUserError(
                f"t2r_attention_transfer got a model whose parameter {frozen_wrongly[0]} is trainable: it must "
                f"be built by the criterion's task before the criterion (as fairseq-train does), so that only "
                f"feature maps reach the optimizer"
            )
        keep = decoder_input(sample).ne(self.padding_idx)  # (B, T): decoder positions that count
        with recording(model, weights=self.xent_weight > 0) as records:
            model(**sample["net_input"], features_only=True)  # the output layer adds nothing here
        ran = {label: r for label, r in records.items() if r.linear is not None}
        if not ran:
            raise T2RUserError("t2r_attention_transfer: the model ran no T2R attention (incremental forward?)")
        loss = 0.0
        logging_output = {}
        for label, rec in ran.items():
            ct = torch.promote_types(rec.linear.dtype, torch.float32)  # fp32 at least (float64 stays)
            err = (rec.linear.to(ct) - rec.softmax.to(ct)).pow(2).mean(dim=(1, 3))  # (B, T)
            mse = err.masked_select(keep).sum()
            loss = loss + mse
            logging_output[LOG_PREFIX + label] = mse.data
        if self.xent_weight > 0:
            xent = 0.0
            for rec in ran.values():
                per_query = -(rec.softmax_weights * rec.linear_weights.clamp(min=TINY).log()).sum(-1)
                xent = xent + per_query.mean(dim=1).masked_select(keep).sum()  # heads averaged
            loss = loss + self.xent_weight * xent
            logging_output[LOG_PREFIX + "xent"] = xent.data
        sample_size = int(keep.sum())
        logging_output.update(
            loss=loss.data, ntokens=sample["ntokens"], nsentences=decoder_input(sample).size(0), sample_size=sample_size
        )
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        denom = max(sample_size, 1)
        metrics.log_scalar("loss", sum(log.get("loss", 0) for log in logging_outputs) / denom, sample_size, round=5)
        keys = [k for k in (logging_outputs[0] if logging_outputs else {}) if k.startswith(LOG_PREFIX)]
        for key in keys:  # module order: l0, l0_cross, l1, ... then xent
            value = sum(log.get(key, 0) for log in logging_outputs) / denom
            metrics.log_scalar(key, value, sample_size, round=5)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
