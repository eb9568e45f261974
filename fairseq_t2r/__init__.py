"""fairseq_t2r: load with ``--user-dir /path/to/fairseq_t2r`` in any fairseq tool."""
from . import compat

compat.apply()

from . import models  # noqa: E402,F401  (registers models and architectures)
