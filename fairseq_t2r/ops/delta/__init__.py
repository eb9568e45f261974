"""The delta rule and the gated delta rule, S_i = g_i (I - beta_i k_i k_i^T) S_{i-1} +
beta_i k_i v_i^T with L2-normalised features: ``naive.py`` (token by token, the tests'
reference), ``chunked.py`` (the WY form, training), ``step.py`` (what they share and the
one-token step), ``fla.py`` (the optional GPU kernel). Callers use ``ops.NAME``."""
