from . import t2r_transformer_lm  # noqa: F401
from . import t2r_transformer  # noqa: F401
