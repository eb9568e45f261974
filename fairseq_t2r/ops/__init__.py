"""Linear attention as pure tensor functions: no parameters, no fairseq (importing this package
must not import fairseq). Callers use the package's names (``ops.causal_chunked``), never the
files inside it, so that a form can move between files without touching its callers."""
from .attention_transfer import linear_attention_weights, softmax_attention  # noqa: F401
from .linear_attention import (  # noqa: F401
    DEFAULT_CHUNK_SIZE,
    DEFAULT_EPS,
    QUADRATIC_MAX_LEN,
    State,
    attend_state,
    autocast_off,
    causal_chunked,
    causal_fla,
    causal_parallel,
    causal_quadratic,
    causal_reference,
    causal_relu_from_input,
    compute_dtype,
    empty_state,
    fla_kernel,
    mask_padded_keys,
    noncausal,
    parallel_form,
    recurrent_step,
    summarize_keys,
)
