"""Shared helpers for the tests: tiny in-process models (fairseq command-line runs: tool_server.py)."""
import os
from argparse import Namespace

from fairseq.data import Dictionary
from fairseq.models.transformer_lm import TransformerLanguageModel, base_lm_architecture

import fairseq_t2r.criterions  # noqa: F401  registers the criteria (and the patches)
import fairseq_t2r.models  # noqa: F401  registers the models
from fairseq_t2r.models.t2r_transformer_lm import T2RTransformerLanguageModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_t2r")
DATA = os.path.join(REPO, "tests", "data")


class FakeTask:
    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def dictionary(size=50):
    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"w{i}")
    return d


def lm_args(**overrides):
    args = Namespace(
        decoder_layers=2,
        decoder_embed_dim=32,
        decoder_input_dim=32,
        decoder_output_dim=32,
        decoder_ffn_embed_dim=64,
        decoder_attention_heads=4,
        tokens_per_sample=256,
        max_target_positions=256,
        dropout=0.0,
        attention_dropout=0.0,
        t2r_feature_dim=8,
    )
    vars(args).update(overrides)
    base_lm_architecture(args)
    return args


def tiny_lm(t2r=True, vocab=50, **overrides):
    task = FakeTask(dictionary(vocab))
    cls = T2RTransformerLanguageModel if t2r else TransformerLanguageModel
    return cls.build_model(lm_args(**overrides), task)


def bit_equal(a, b):
    """Same dtype, shape and bytes. Unlike torch.equal, true for a copied NaN: fairseq's
    ``_float_tensor`` buffers are uninitialised memory, sometimes NaN."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = (t.detach().contiguous().reshape(-1).view(torch.uint8) for t in (a, b))
    return torch.equal(a, b)


def load_checkpoint(path):
    """A checkpoint's whole dict, as fairseq wrote it (optimizer history and state included)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def step_by_step(attn, x, key_padding_mask=None, state=None):
    """Feed x (T, B, C) one token at a time through an attention module's incremental path."""
    import torch

    state = {} if state is None else state
    outs = []
    for t in range(x.size(0)):
        kpm = None if key_padding_mask is None else key_padding_mask[:, t : t + 1]
        o, _ = attn(x[t : t + 1], x[t : t + 1], x[t : t + 1], key_padding_mask=kpm, incremental_state=state)
        outs.append(o)
    return torch.cat(outs, 0), state
