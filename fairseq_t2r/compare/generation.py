"""Generation, not only likelihood: continuations of test prompts, judged against the teacher's.

Every model continues the same prompts (real test text at seeded offsets) twice: greedily, and by
top-k sampling from one seeded generator. Each continuation is scored by chrF against the
teacher's continuation of the same prompt (same decoding), and by the teacher's perplexity of it
(how likely the teacher finds what the model wrote). Decoding is incremental, as
``fairseq-interactive`` runs it: one token at a time through the model's incremental state.
"""
from typing import Dict, List

import numpy as np

SEED = 2024
PROMPTS = 16
TOP_K = 10


def prompts(stream: np.ndarray, length: int, n: int = PROMPTS, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(stream) - length, size=n)
    return np.stack([stream[s: s + length] for s in starts]).astype(np.int64)


def continue_(model, prompt, steps: int, sample: bool, seed: int = SEED):
    """(B, steps) continuation of ``prompt`` (B, P): greedy, or top-k sampled with a seeded generator."""
    import torch

    g = torch.Generator().manual_seed(seed)
    state: Dict = {}
    x = prompt
    out = []
    for t in range(prompt.shape[1] + steps - 1):
        logits, _ = model.decoder(x[:, : t + 1], incremental_state=state)
        if t < prompt.shape[1] - 1:
            continue  # still reading the prompt
        lp = model.get_normalized_probs((logits, None), log_probs=True)[:, -1].float()
        if sample:
            top, idx = lp.topk(TOP_K, dim=-1)
            nxt = idx.gather(-1, torch.multinomial(top.exp(), 1, generator=g))
        else:
            nxt = lp.argmax(-1, keepdim=True)
        out.append(nxt)
        x = torch.cat([x, nxt], dim=1)
    return torch.cat(out, dim=1)


def text(dict_, tokens) -> str:
    """Readable text of generated tokens (subword-nmt's "@@ " joined)."""
    return dict_.string(tokens, bpe_symbol="subword_nmt")


def probe(models, stream: np.ndarray, dict_, trained: int, n: int = PROMPTS, seed: int = SEED,
          longest: int = 64) -> Dict:
    """{"prompt_tokens", "new_tokens", "modes": {mode: {name: {chrf_vs_teacher, teacher_ppl}}}, "samples"}."""
    import sacrebleu
    import torch

    from .models import score

    p_len = steps = max(8, min(longest, trained // 2))  # prompt and continuation lengths
    prompt = torch.as_tensor(prompts(stream, p_len, n, seed))
    teacher = models[0]
    modes: Dict[str, Dict[str, dict]] = {}
    samples: Dict[str, List[str]] = {}
    for mode in ("greedy", "sampled"):
        conts = {m.name: continue_(m.model, prompt, steps, mode == "sampled", seed) for m in models}
        refs = [text(dict_, c) for c in conts[teacher.name]]
        modes[mode] = {}
        for m in models:
            hyps = [text(dict_, c) for c in conts[m.name]]
            lp, _ = score(teacher.model, torch.cat([prompt, conts[m.name]], dim=1))
            nll = -lp[:, p_len - 1:].double().mean()
            modes[mode][m.name] = {"chrf_vs_teacher": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
                                   "teacher_ppl": float(np.exp(float(nll)))}
            samples.setdefault(m.name, []).append(hyps[0])
    return {"prompt_tokens": p_len, "new_tokens": steps, "prompts": n, "modes": modes,
            "example_prompt": text(dict_, prompt[0]), "examples": samples}
