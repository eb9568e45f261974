"""Passkey (RULER's single needle): a random number stated once in real filler text, asked for at
the end, the digits decoded greedily (in one forward pass, see ``key_argmax``).

A trial is ``filler[:depth] + "the pass key is d d d d d ." + filler[depth:] + "the pass key is"``
at a total length of 1x, 2x, 4x, 8x the trained block length; the model then decodes as many
tokens as the key has digits, greedily, and a trial counts when every digit is right. The key, its
depth and the filler are drawn from one seeded generator (``trials``), so every model answers the
same questions. The carrier words are those of ``CARRIER`` the dictionary holds as whole words, and
the digits those of 0-9 it holds as tokens (BPE keeps single characters); a dictionary without
enough digits gets no passkey probe, and the report says so.
"""
from typing import Dict, List, Optional

import numpy as np

SEED = 4321
TRIALS = 10
DIGITS = 5
CARRIER = ("the", "pass", "key", "is")
MULTIPLES = (1, 2, 4, 8)


def vocabulary(dict_) -> Optional[dict]:
    """{"digits": [token ids], "carrier": [ids], "period": id or None}; None without 4 digits."""
    unk = dict_.unk()
    digits = [dict_.index(str(d)) for d in range(10) if dict_.index(str(d)) != unk]
    if len(digits) < 4:
        return None
    carrier = [dict_.index(w) for w in CARRIER if dict_.index(w) != unk]
    period = dict_.index(".")
    return {"digits": digits, "carrier": carrier, "period": None if period == unk else period}


def trials(stream: np.ndarray, vocab: dict, length: int, n: int = TRIALS, seed: int = SEED,
           digits: int = DIGITS) -> List[dict]:
    """``n`` trials of ``length`` prompt tokens: [{"prompt": int64 array, "key": int64 array, "depth"}].
    Deterministic in (stream, vocab, length, n, seed)."""
    rng = np.random.default_rng([seed, length])
    statement_tail = [vocab["period"]] if vocab["period"] is not None else []
    query = np.array(vocab["carrier"], dtype=np.int64)
    out = []
    for _ in range(n):
        key = rng.choice(np.array(vocab["digits"]), size=digits)
        needle = np.concatenate([query, key, statement_tail]).astype(np.int64)
        filler_len = length - len(needle) - len(query)
        if filler_len < 1 or filler_len >= len(stream):
            raise ValueError(f"a passkey prompt of {length} tokens does not fit the test text ({len(stream)} tokens)")
        start = int(rng.integers(0, len(stream) - filler_len))
        filler = stream[start: start + filler_len]
        depth = int(rng.integers(0, filler_len + 1))
        prompt = np.concatenate([filler[:depth], needle, filler[depth:], query]).astype(np.int64)
        out.append({"prompt": prompt, "key": key.astype(np.int64), "depth": depth / filler_len})
    return out


def key_argmax(model, prompts, keys):
    """(B, digits) the model's top-1 token at each key position, reading the prompt and the true key
    before it (one forward pass). A greedy decoder writes the whole key right exactly when every one
    of these is right (up to its first error it reads what this forward reads), so the full-key
    accuracy is greedy decoding's; per digit, this is the teacher-forced accuracy."""
    import torch

    x = torch.cat([prompts, keys[:, :-1]], dim=1)
    lp = model.get_normalized_probs(model(x), log_probs=True)
    return lp[:, prompts.shape[1] - 1:].argmax(-1)


def probe(models, stream: np.ndarray, dict_, trained: int, n: int = TRIALS, seed: int = SEED,
          multiples=MULTIPLES, digits: int = DIGITS) -> Dict:
    """{"lengths", "trials", "models": {name: [{length, accuracy, digit_accuracy} or None]}} or
    {"skipped": reason}. ``accuracy``: keys decoded greedily with every digit right; ``digit_accuracy``:
    digits right when the digits before them are given."""
    import torch

    vocab = vocabulary(dict_)
    if vocab is None:
        return {"skipped": "the dictionary has fewer than 4 of the digits 0-9 as tokens"}
    lengths = [k * trained for k in multiples if k * trained + digits < len(stream)]
    out = {m.name: [] for m in models}
    for length in lengths:
        ts = trials(stream, vocab, length, n, seed, digits)
        prompts = torch.as_tensor(np.stack([t["prompt"] for t in ts]))
        keys = np.stack([t["key"] for t in ts])
        for m in models:
            if not m.runs(length + digits):
                out[m.name].append(None)
                continue
            right = key_argmax(m.model, prompts, torch.as_tensor(keys)).numpy() == keys
            out[m.name].append({"length": length, "accuracy": float(right.all(1).mean()),
                                "digit_accuracy": float(right.mean())})
    return {"lengths": lengths, "trials": n, "digits": digits, "models": out}
