"""The gated states S_i = diag(g_i) S_{i-1} + phi_k_i v_i^T (z likewise), gates as per-token
log-gates per head (B, H, T) or per feature (B, H, T, F): ``naive.py`` (token by token, the
tests' reference), ``chunked.py`` (the chunked form in log space, and the one-token step),
``feature.py`` (per-feature gates within chunks), ``scan.py`` (the chunk-to-chunk scan with its
written-out backward), ``decay.py`` (a per-head decay's log-gates), ``fla.py`` (the optional GPU
kernels). Callers use ``ops.NAME``."""
