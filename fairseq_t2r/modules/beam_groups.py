"""Cross-attention source summaries shared by the hypotheses of one sentence under beam search.

SequenceGenerator expands the encoder output to bsz * beam rows, beam copies of each source. A
T2R cross-attention summarises its source once, into a state [S | z] that does not grow with the
source; these functions let it keep one summary per *sentence* (the group of beam rows that read
it) instead of one per hypothesis, and keep that sharing correct when beam search reorders rows.
The incremental state then holds ``Sz_src`` (sentences, H, F, D + 1) and ``src_group`` (rows per
summary).
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

# The incremental-state entry where the answer of ``follow_reorder`` is kept for one step: fairseq
# hands every layer the same new_order tensor, so it is computed once per step, not per layer.
REORDER_MEMO_KEY = "t2r_beam_groups.reorder"


def source_group(beam_size: int, key: Tensor, query: Tensor) -> int:
    """``beam_size`` if the encoder rows of ``key`` (S, B, C) come in groups of beam_size copies of
    one source (as SequenceGenerator expands them), else 1. Checked, because beam_size may be
    stale: fairseq calls set_beam_size only for beams > 1, so a beam-1 search after a beam-4 one
    sees 4."""
    g = beam_size
    bsz = key.size(1)
    if g <= 1 or bsz != query.size(1) or bsz % g:
        return 1
    grouped = key.view(key.size(0), bsz // g, g, key.size(2))
    return g if bool((grouped == grouped[:, :, :1]).all()) else 1


def one_per_sentence(key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor], group: int):
    """The first row of every group of ``group`` rows: key, value (S, B, C) -> (S, B // group, C),
    key_padding_mask (B, S) -> (B // group, S) (None stays None)."""
    key = key.view(key.size(0), -1, group, key.size(2))[:, :, 0]
    value = value.view(value.size(0), -1, group, value.size(2))[:, :, 0]
    if key_padding_mask is not None:
        key_padding_mask = key_padding_mask.view(-1, group, key_padding_mask.size(1))[:, 0]
    return key, value, key_padding_mask


def follow_reorder(incremental_state: Dict, new_order: Tensor, group: int, summaries: int) -> Tuple[str, Optional[Tensor]]:
    """How per-sentence summaries follow a beam reordering ``new_order`` (B,) of rows grouped by
    ``group``, ``summaries`` summaries in all:

    - ("keep", None) when beams only moved within their sentence;
    - ("sentences", order) to keep, drop or move whole sentences (order: summaries to select);
    - ("rows", order) once rows no longer come in whole sentences: from then on one summary per
      row, row r taking summary new_order[r] // group.

    The answer is memoised in ``incremental_state`` for the layers that follow in the same step.
    """
    stamp = (group, summaries, new_order._version)
    memo = incremental_state.get(REORDER_MEMO_KEY)
    if memo is not None and memo["new_order"] is new_order and memo["stamp"] == stamp:
        return memo["answer"]
    sent = new_order.div(group, rounding_mode="floor")
    if new_order.numel() % group == 0 and bool((sent.view(-1, group) == sent.view(-1, group)[:, :1]).all()):
        order = sent.view(-1, group)[:, 0]
        if order.numel() == summaries and bool((order == torch.arange(order.numel(), device=order.device)).all()):
            answer = ("keep", None)
        else:
            answer = ("sentences", order)
    else:
        answer = ("rows", sent)
    incremental_state[REORDER_MEMO_KEY] = {"new_order": new_order, "stamp": stamp, "answer": answer}
    return answer
