"""The T2R models and their ``t2r_`` architectures, registered with fairseq on import."""
from .. import patches

patches.apply()  # every fairseq tool that builds a T2R model gets the fixes of patches/

from . import t2r_bart, t2r_transformer, t2r_transformer_lm  # noqa: E402,F401  (register the models)
