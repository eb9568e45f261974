"""Fixes for fairseq on current torch / numpy, applied when the plugin is imported.

fairseq imports a ``--user-dir`` before it loads any checkpoint, so every fairseq tool run with
``--user-dir fairseq_t2r`` gets these, with no edit of site-packages and no environment variable.
Each fix is narrow: it touches only the fairseq modules that need it.
"""
import types

import numpy as np
import torch


class _TorchTrustingCheckpoints(types.ModuleType):
    """``torch`` as seen by fairseq's checkpoint code, with ``load`` defaulting to weights_only=False.

    torch >= 2.6 loads with weights_only=True, which rejects fairseq checkpoints
    ("Unsupported global: argparse.Namespace", numpy scalars in old released checkpoints).
    fairseq's main branch fixed this the same way, by passing weights_only=False in
    checkpoint_utils. Checkpoints are code-equivalent: load only files you trust.
    """

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def trusted_torch_load(*args, **kwargs):
    return _TorchTrustingCheckpoints.load(*args, **kwargs)


def apply():
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as distributed_utils

    for module in (checkpoint_utils, distributed_utils):
        if not isinstance(module.torch, _TorchTrustingCheckpoints):
            module.torch = _TorchTrustingCheckpoints()

    # numpy 2 removed np.compat; fairseq's TokenBlockDataset(break_mode="eos") and
    # LanguagePairDataset's batch bucketing still use np.compat.long (which was plain int).
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=int)
