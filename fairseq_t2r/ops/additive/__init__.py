"""The additive state (T2R, the paper): ``naive.py`` (token by token, the tests' reference),
``quadratic.py`` (the (T, T) weight forms, dropout), ``chunked.py`` + ``chunked_passes.py`` (the
linear-memory training form and its written-out backward), ``fused_relu.py`` (projection, relu
and the chunked form in one Function), ``step.py`` (one token; the source summaries), ``fla.py``
and ``triton.py`` (the optional GPU kernels). Callers use ``ops.NAME``."""
