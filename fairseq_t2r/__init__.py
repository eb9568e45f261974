"""fairseq_t2r: load with ``--user-dir /path/to/fairseq_t2r`` in any fairseq tool."""
from . import compat, errors

compat.apply()
# checkpoint mistakes (missing path, not a checkpoint) become one-line errors in every tool
errors.guard_checkpoint_loading()

from . import models  # noqa: E402,F401  (registers models and architectures)
from . import criterions  # noqa: E402,F401  (registers t2r_attention_transfer, t2r_distillation)
