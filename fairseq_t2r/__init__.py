"""fairseq_t2r: load with ``--user-dir /path/to/fairseq_t2r`` in any fairseq tool.

Importing the package registers the T2R models, architectures and criteria with fairseq -- but
only when fairseq is already imported. That covers both ways fairseq meets the plugin: it imports
a ``--user-dir`` after itself, and a full unpickle of a T2R checkpoint (its marker,
``fairseq_t2r.errors.RequiresUserDir``) imports the package inside fairseq's loader. Everything
else stays free of fairseq: ``import fairseq_t2r.ops`` (pure tensor functions) or
``t2r-prepare-lm --help`` neither imports nor patches it. Code of the package that uses fairseq
imports what it needs explicitly (``from fairseq_t2r import models, criterions``): when the
package was first imported without fairseq, fairseq's ``--user-dir`` import finds it in
``sys.modules`` and does not run this file again.
"""
import sys

if "fairseq" in sys.modules:
    from . import (
        criterions,  # noqa: F401  (registers t2r_attention_transfer, t2r_distillation)
        models,  # noqa: F401  (registers models and architectures; applies patches)
    )
