"""Copying: a span of real test text repeated after a gap of D tokens of other real text.

Each trial is one block ``[lead | span | gap (D tokens) | span]`` cut from the test stream at
seeded offsets. The loss on the second copy against the first (both without the span's first
token, which nothing in the block predicts) says how much of the span the model retrieves from
D + span tokens back: a softmax attention copies at any D its positions allow; a fixed-size
state holds a bounded amount, so its second-copy loss rises towards the first as D grows.
"""
from typing import Dict, List, Optional

import numpy as np

SEED = 1234
TRIALS = 8


def span_length(trained: int) -> int:
    return max(4, min(32, trained // 4))


def gaps(trained: int, longest: int, span: int) -> List[int]:
    """D = 0, then a quarter, half, 1x, 2x, 4x the trained length, and the longest gap a block of
    ``longest`` tokens leaves room for."""
    most = longest - 2 * span - 1
    out = [0] + [g for g in (trained // 4, trained // 2, trained, 2 * trained, 4 * trained) if 0 < g < most]
    return out + [most] if most > out[-1] else out


def blocks(stream: np.ndarray, span: int, gap: int, trials: int = TRIALS, seed: int = SEED) -> np.ndarray:
    """(trials, 2 * span + gap + 1) int64: [lead, span, gap, span] per trial, deterministic in ``seed``
    (the same spans for every gap). The gap is the text that follows the span in the stream (wrapping
    at its end), so it never holds the span itself."""
    rng = np.random.default_rng(seed)
    need = span + 1
    if len(stream) < need + gap:
        raise ValueError(f"the test text ({len(stream)} tokens) is too short for a gap of {gap}")
    starts = rng.integers(0, len(stream) - need, size=trials)
    rows = []
    for s in starts:
        lead_span = stream[s: s + need]
        filler = np.take(stream, np.arange(s + need, s + need + gap), mode="wrap")
        rows.append(np.concatenate([lead_span, filler, lead_span[1:]]))
    return np.stack(rows).astype(np.int64)


def copy_losses(target_nll: np.ndarray, span: int, gap: int) -> Dict[str, float]:
    """{"first", "second", "ratio"} from the per-target NLL (B, T) of ``blocks`` rows: the mean loss on
    span tokens 2..span of each copy (targets are tokens 1..T of the block)."""
    # block token i is target i-1; the first copy's tokens are 1..span, the second's span+gap+1..
    first = target_nll[:, 1:span]
    second = target_nll[:, span + gap + 1: 2 * span + gap]
    f, s = float(first.mean()), float(second.mean())
    return {"first": f, "second": s, "ratio": s / f if f > 0 else None}


def probe(models, stream: np.ndarray, trained: int, longest: int, trials: int = TRIALS,
          seed: int = SEED) -> Dict[str, dict]:
    """{"span", "gaps", "models": {name: [{gap, first, second, ratio} or None where it cannot run]}}."""
    import torch

    from .models import score

    span = span_length(trained)
    ds = [d for d in gaps(trained, longest, span) if len(stream) >= span + 1 + d]
    out: Dict[str, List[Optional[dict]]] = {m.name: [] for m in models}
    for d in ds:
        rows = torch.as_tensor(blocks(stream, span, d, trials, seed))
        for m in models:
            if not m.runs(rows.shape[1] - 1):
                out[m.name].append(None)
                continue
            lp, _ = score(m.model, rows)
            out[m.name].append({"gap": d, **copy_losses((-lp).double().numpy(), span, d)})
    return {"span": span, "gaps": ds, "trials": trials, "models": out}
