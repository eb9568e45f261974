from . import t2r_transformer_lm  # noqa: F401
