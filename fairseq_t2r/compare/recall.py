"""Recall tokens against the rest (Zoology's associative-recall split, on real text).

A target token *completes a repeated n-gram* when the n tokens ending at it already occurred, in
that order, earlier in the same context (the block the model reads): a model can predict it by
looking back, which a softmax attention does exactly and a fixed-size state only approximately.
Among the repeated bigrams, the *rare* ones are those the training data holds at most
``RARE_MAX_COUNT`` times: there, looking back is what predicts the token, not knowing the phrase.

Parts (they overlap: ``repeated-3`` and ``rare-2`` are subsets of ``repeated-2``; ``other`` is the
complement of ``repeated-2``), each scored by perplexity, share of the tokens, and top-1 agreement
and KL(teacher || model) on its positions.
"""
from typing import Dict, Iterable, Optional

import numpy as np

from ..demo.faithfulness import per_position

RARE_MAX_COUNT = 2          # a bigram seen at most this often in the training data is rare
PARTS = ("repeated-2", "repeated-3", "rare-2", "other")
PART_WORDS = {"repeated-2": "completes a bigram seen earlier in the context",
              "repeated-3": "completes a trigram seen earlier in the context",
              "rare-2": "completes a repeated bigram that is rare in the training data",
              "other": "every other token"}


def repeated_ngram_mask(tokens: np.ndarray, n: int, first_target: int = 1) -> np.ndarray:
    """(T,) bool for a block ``tokens`` (T,): True at position t >= ``first_target`` when
    tokens[t-n+1 .. t] occurred at some earlier end position j < t (j >= n-1). Position t is the
    target predicted from tokens[:t]; ``first_target`` skips positions that are inputs only."""
    t_len = len(tokens)
    out = np.zeros(t_len, dtype=bool)
    seen = set()
    for t in range(n - 1, t_len):
        gram = tuple(tokens[t - n + 1: t + 1].tolist())
        if gram in seen and t >= first_target:
            out[t] = True
        seen.add(gram)
    return out


def bigram_counts(stream: np.ndarray, vocab: int) -> Dict[int, int]:
    """{a * vocab + b: count} of every bigram of the training stream (one int64 key per pair)."""
    stream = np.asarray(stream, dtype=np.int64)
    keys, counts = np.unique(stream[:-1] * vocab + stream[1:], return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist()))


def split(block: np.ndarray, vocab: int, counts: Optional[Dict[int, int]], first_target: int = 1,
          rare_max: int = RARE_MAX_COUNT) -> Dict[str, np.ndarray]:
    """{part: (T,) bool} of one block (a token sequence whose positions >= ``first_target`` are
    targets). ``counts``: training bigram counts (``bigram_counts``); None leaves ``rare-2`` empty."""
    block = np.asarray(block, dtype=np.int64)
    rep2 = repeated_ngram_mask(block, 2, first_target)
    rep3 = repeated_ngram_mask(block, 3, first_target)
    rare = np.zeros_like(rep2)
    if counts is not None:
        for t in np.flatnonzero(rep2):
            rare[t] = counts.get(int(block[t - 1]) * vocab + int(block[t]), 0) <= rare_max
    targets = np.zeros_like(rep2)
    targets[first_target:] = True
    return {"repeated-2": rep2, "repeated-3": rep3, "rare-2": rare, "other": targets & ~rep2}


class PartSums:
    """Running sums per part of one model: summed NLL, tokens, agreeing top-1 and summed KL."""

    def __init__(self):
        self.sums = {p: [0.0, 0, 0, 0.0] for p in PARTS}

    def add(self, masks: Dict[str, "np.ndarray"], nll, agree, kl):
        """masks: {part: bool array}; nll, agree, kl: float arrays of the same shape (per position)."""
        for p in PARTS:
            m = masks[p]
            s = self.sums[p]
            s[0] += float(nll[m].sum())
            s[1] += int(m.sum())
            s[2] += int(agree[m].sum())
            s[3] += float(kl[m].sum())

    def result(self, total: int) -> Dict[str, dict]:
        out = {}
        for p, (nll, n, agree, kl) in self.sums.items():
            out[p] = {"tokens": n, "share": n / total if total else 0.0,
                      "ppl": float(np.exp(nll / n)) if n else None,
                      "top1_agreement": agree / n if n else None, "kl": kl / n if n else None}
        return out


def probe(scorer, stream: np.ndarray, block: int, vocab: int, counts, names: Iterable[str],
          max_blocks: Optional[int] = None) -> Dict[str, dict]:
    """The recall split over the test ``stream`` cut into blocks of ``block`` targets (one more token
    as the first input), every model scored on the same blocks against the teacher.

    ``scorer(blocks (B, T+1)) -> {name: (lprobs of the targets (B, T), log-probs (B, T, V))}``, the
    teacher under "teacher" (see ``models.Scorer``). Returns {name: {part: figures}}."""
    import torch

    n_blocks = (len(stream) - 1) // block
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    sums = {name: PartSums() for name in names}
    total = 0
    batch = 8
    for start in range(0, n_blocks, batch):
        rows = [stream[i * block: i * block + block + 1] for i in range(start, min(start + batch, n_blocks))]
        blocks = torch.as_tensor(np.stack(rows), dtype=torch.long)
        out = scorer(blocks)
        lt = out["teacher"][1]
        masks_rows = [split(r, vocab, counts, first_target=1) for r in rows]
        # drop the first input position: the masks index tokens, the log-probs index targets 1..T
        masks = {p: np.stack([m[p][1:] for m in masks_rows]) for p in PARTS}
        total += blocks.shape[0] * block
        for name, (target_lp, lprobs) in out.items():
            agree, kl = per_position(lt, lprobs)
            sums[name].add(masks, (-target_lp).double().numpy(), agree.numpy(), kl.numpy())
    return {name: s.result(total) for name, s in sums.items()}
