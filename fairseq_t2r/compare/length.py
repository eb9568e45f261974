"""Test perplexity at contexts of 1x, 2x, 4x and 8x the trained block length.

Every length scores the same tokens: the test stream's first ``8 * trained`` (or as many whole
longest blocks as it holds) cut into blocks of that length, so the figures differ only by how much
context each token has. A model with learned positions stops at its table; the softmax teacher
with sinusoidal positions runs (and its memory grows with the context); a T2R model runs in
constant memory per token.
"""
from typing import Dict

import numpy as np

MULTIPLES = (1, 2, 4, 8)


def probe(models, stream: np.ndarray, trained: int, max_tokens: int = 16384, multiples=MULTIPLES) -> Dict:
    """{"lengths", "tokens", "models": {name: [ppl or None]}}."""
    import torch

    from .models import score

    longest = max(k * trained for k in multiples if k * trained < len(stream))
    usable = min((len(stream) - 1) // longest * longest, max(longest, max_tokens // longest * longest))
    lengths = [k * trained for k in multiples if k * trained <= longest]
    out = {m.name: [] for m in models}
    for length in lengths:
        rows = [stream[i: i + length + 1] for i in range(0, usable, length)]
        for m in models:
            if not m.runs(length):
                out[m.name].append(None)
                continue
            nll = n = 0.0
            batch = max(1, 4096 // length)
            for b in range(0, len(rows), batch):
                lp, _ = score(m.model, torch.as_tensor(np.stack(rows[b: b + batch])))
                nll, n = nll - float(lp.double().sum()), n + lp.numel()
            out[m.name].append(float(np.exp(nll / n)))
    return {"lengths": lengths, "tokens": usable, "models": out}
