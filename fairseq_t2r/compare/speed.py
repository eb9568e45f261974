"""Decoding time per token and incremental-state size at a short and a long context, for every
model (``demo/measure.py``'s ``decode``: fairseq's decoding loop, one token at a time)."""
from typing import Dict, List


def contexts(kind: str, trained: int, longest: int = 8) -> List[int]:
    """LM: the trained block length and ``longest`` times it; translation: 32- and 256-token sources
    and outputs."""
    return [trained, longest * trained] if kind == "lm" else [32, 256]


def probe(models, kind: str, trained: int, rows: int = 4, window: int = 16, longest: int = 8) -> Dict:
    from ..demo.measure import decode

    cs = contexts(kind, trained, longest)
    out: Dict[str, list] = {}
    for m in models:
        out[m.name] = [decode(m.model, c, rows, window, source_len=c if kind == "mt" else 0) if m.runs(c + 1) else None
                       for c in cs]
    return {"contexts": cs, "rows": rows, "models": out}
