"""Translation probes: BLEU and chrF by source length, and a document probe.

Every model translates the same test sentences (beam ``BEAM``, as the demo's ``fairseq-generate``),
scored against the references and against the teacher's own translations, overall and in four
buckets of source length (the test set's quartiles, in subword tokens). The document probe joins
k = 1, 2, 4, 8 consecutive test sentences into one source (and their references into one
reference), so the decoder reads and writes k times the usual length: what a fixed-size decoder
state, or a softmax cross-attention over a long source, does with text longer than it trained on.
Each model's outputs are also measured in decoder positions (subword tokens + the leading eos): the
share that fits within a window of W positions is the share for which a ``--t2r-window W`` model's
self-attention is the teacher's plain softmax, its linear branch unused.
"""
from typing import Dict, List

import numpy as np

BEAM = 4
MAX_SENTENCES = 400
DOCS = 16
JOINED = (1, 2, 4, 8)
WINDOWS = (16, 32, 64)  # the --t2r-window sizes whose share of outputs is reported (the demo's window arms)


def detok(dict_, tokens, lang: str) -> str:
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=lang).detokenize(dict_.string(tokens, bpe_symbol="subword_nmt").split())


def translate(model, sources: List, src_dict, tgt_dict, batch: int = 32) -> List:
    """Beam-search translations (token tensors, no eos) of ``sources`` (token tensors ending with eos)."""
    import torch
    from fairseq.data import data_utils
    from fairseq.sequence_generator import SequenceGenerator

    gen = SequenceGenerator([model], tgt_dict, beam_size=BEAM, max_len_a=1.5, max_len_b=10)
    order = np.argsort([len(s) for s in sources])
    out = [None] * len(sources)
    for b in range(0, len(order), batch):
        idx = order[b: b + batch]
        src = data_utils.collate_tokens([sources[i] for i in idx], src_dict.pad(), src_dict.eos(), left_pad=True)
        lengths = torch.tensor([len(sources[i]) for i in idx])
        hypos = gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}})
        for i, h in zip(idx, hypos):
            t = h[0]["tokens"]
            out[i] = t[:-1] if len(t) and t[-1] == tgt_dict.eos() else t
    return out


def within_windows(outputs: List) -> Dict[str, float]:
    """Share of ``outputs`` (token tensors, no eos) whose decoder positions (tokens + the leading eos) fit in
    each window of ``WINDOWS``."""
    positions = np.array([len(t) + 1 for t in outputs])
    return {str(w): round(float((positions <= w).mean()), 4) for w in WINDOWS}


def scores(hyps: List[str], refs: List[str]) -> Dict[str, float]:
    import sacrebleu

    return {"bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)}


def buckets(lengths: List[int]) -> List[tuple]:
    """Four (low, high) inclusive source-length ranges at the quartiles."""
    q = np.quantile(lengths, [0.25, 0.5, 0.75]).astype(int).tolist()
    edges = [min(lengths) - 1, *q, max(lengths)]
    return [(edges[i] + 1, edges[i + 1]) for i in range(4) if edges[i + 1] > edges[i]]


def join(sentences: List, k: int, n: int, eos: int) -> List:
    """``n`` documents of ``k`` consecutive sentences each (inner eos dropped, one at the end)."""
    import torch

    docs = []
    for d in range(min(n, len(sentences) // k)):
        parts = [s[:-1] if s[-1] == eos else s for s in sentences[d * k: (d + 1) * k]]
        docs.append(torch.cat(parts + [torch.tensor([eos])]))
    return docs


def probe(models, sources: List, targets: List, src_dict, tgt_dict, tgt_lang: str,
          max_sentences: int = MAX_SENTENCES, docs: int = DOCS) -> Dict:
    """{"sentences", "buckets", "models": {name: {overall, by_length, documents}}}."""
    sources, targets = sources[:max_sentences], targets[:max_sentences]
    refs = [detok(tgt_dict, t[:-1], tgt_lang) for t in targets]
    lengths = [len(s) for s in sources]
    ranges = buckets(lengths)
    outputs = {m.name: translate(m.model, sources, src_dict, tgt_dict) for m in models}
    hyps = {name: [detok(tgt_dict, t, tgt_lang) for t in o] for name, o in outputs.items()}
    teacher = hyps[models[0].name]
    out = {}
    for m in models:
        h = hyps[m.name]
        by_length = []
        for lo, hi in ranges:
            idx = [i for i, n in enumerate(lengths) if lo <= n <= hi]
            sel = [h[i] for i in idx]
            by_length.append({"range": [lo, hi], "sentences": len(idx), **scores(sel, [refs[i] for i in idx]),
                              "bleu_vs_teacher": scores(sel, [teacher[i] for i in idx])["bleu"]})
        out[m.name] = {"overall": {**scores(h, refs), "bleu_vs_teacher": scores(h, teacher)["bleu"]},
                       "by_length": by_length, "within_window": within_windows(outputs[m.name])}
    documents = {}
    for k in JOINED:
        srcs, tgts = join(sources, k, docs, src_dict.eos()), join(targets, k, docs, tgt_dict.eos())
        if not srcs:
            continue
        drefs = [detok(tgt_dict, t[:-1], tgt_lang) for t in tgts]
        dh = {m.name: [detok(tgt_dict, t, tgt_lang) for t in translate(m.model, srcs, src_dict, tgt_dict)]
              for m in models}
        for m in models:
            documents.setdefault(m.name, []).append(
                {"sentences_joined": k, "documents": len(srcs), "mean_source_tokens": float(np.mean([len(s) for s in srcs])),
                 **scores(dh[m.name], drefs), "bleu_vs_teacher": scores(dh[m.name], dh[models[0].name])["bleu"]})
    for m in models:
        out[m.name]["documents"] = documents.get(m.name, [])
    return {"sentences": len(sources), "beam": BEAM, "buckets": ranges, "models": out}
