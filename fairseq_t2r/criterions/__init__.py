"""fairseq criteria of the plugin (``--criterion NAME`` in fairseq-train once ``--user-dir`` is set):

- ``t2r_attention_transfer``: stage one, fit the feature maps to the softmax attention they replace;
- ``t2r_distillation``: stage two option, task loss plus KL to a frozen softmax teacher.
"""
from .. import patches

patches.apply()  # a criterion may load checkpoints (the teacher) in any fairseq tool

from . import attention_transfer, distillation  # noqa: E402,F401  (register the two criteria)
