"""Linear attention as pure tensor functions: no parameters, no fairseq (importing this package
must not import fairseq). Callers use the package's names (``ops.causal_chunked``), never the
files inside it, so that a form can move between files without touching its callers.

Every form takes feature-mapped queries and keys, phi(q) and phi(k), head-major:
``phi_q`` (B, H, T, F), ``phi_k`` (B, H, S, F), ``v`` (B, H, S, D), then ``eps=`` and its own
options; it returns (B, H, T, D) in v's dtype. Padded keys are zeroed in ``phi_k`` beforehand
(``mask_padded_keys``). Normalised attention for query i is

    out_i = (phi_q_i . S_i) / max(phi_q_i . z_i, eps)

with S_i = sum_j phi_k_j v_j^T and z_i = sum_j phi_k_j over the keys query i may see (j <= i for
causal attention, all j otherwise). Half-precision inputs are summed in fp32 (``compute_dtype``)
and the output is cast back; every form disables autocast and picks its precision itself.

The files, one per form, all forms exact and interchangeable:
- ``common.py``: defaults (``DEFAULT_EPS``, ``DEFAULT_CHUNK_SIZE``), ``State`` = (S, z), the
  precision rule, ``autocast_off``, ``mask_padded_keys``, ``causal_mask``.
- ``reference.py``: ``causal_reference`` (token by token) and ``noncausal_reference`` (query by
  query), slow and independent of the other forms: what the tests check every fast form against.
- ``recurrent.py``: the state forms. ``recurrent_step`` (one token, constant time and memory:
  incremental decoding), ``empty_state``, ``summarize_keys`` / ``attend_state`` (cross-attention
  reduces its keys to (S, z) once, then every query, or every decoding step, reads them).
- ``quadratic.py``: the weight-matrix forms. ``causal_quadratic`` builds the (T, T) weights:
  fastest for short sequences and, with ``noncausal``'s dropout path, the only forms that can
  drop attention weights; ``linear_attention_weights`` (attention transfer's cross-entropy).
- ``chunked.py`` (+ ``chunked_passes.py``, the forward/backward written out): ``causal_chunked``,
  O(T * C) work and memory linear in T, with a backward that recomputes the chunk states; it
  continues from / returns a State (prefill).
- ``fused_relu.py``: ``causal_relu_from_input``, relu features' training form: projection, relu
  and the chunked form in one Function, with the memory of one projection; where ``dispatch``
  says "triton", ``causal_relu_triton_from_input`` (torch's projection, the kernels' relu on load).
- ``fla.py``: ``causal_fla``, the chunked form with flash-linear-attention's Triton kernel on CUDA
  (optional package, opt-in ``FAIRSEQ_T2R_FLA=1``), ``fla_kernel``.
- ``triton_linear.py``: ``causal_triton``, the chunked form as fused Triton kernels (forward and
  backward; relu feature map on load with ``relu=True``). Optional package (``pip install .[gpu]``),
  never imported by this package: ``dispatch`` imports it only under ``FAIRSEQ_T2R_TRITON=1`` on CUDA.
- ``dispatch.py``: ``causal_parallel``, the training form, runs ``parallel_form``'s choice:
  quadratic up to ``QUADRATIC_MAX_LEN`` or with weight dropout, else on CUDA the Triton kernels
  under ``FAIRSEQ_T2R_TRITON=1`` (fp32/fp16/bf16), else fla when enabled, else chunked. The same
  policy decides ``causal_relu_from_input``'s form. The state updates' training forms run
  ``gated_parallel`` (``causal_gated``'s arguments) and ``delta_parallel`` (``delta_chunked``'s),
  by ``state_form``: our forms, or on CUDA under ``FAIRSEQ_T2R_FLA=1`` fla's kernels.
- ``fla_states.py``: ``causal_gated_fla`` (fla's ``chunk_simple_gla`` for per-head gates, the
  decay and no gate; ``chunk_gla`` for per-feature gates) and ``delta_fla`` (fla's
  ``chunk_gated_delta_rule``, log-gate 0 for the plain delta rule), same signatures and returns
  as ``causal_gated`` / ``delta_chunked``, our normaliser and L2 norm; ``fla_state_kernel``.
- ``softmax.py``: ``softmax_attention``, the target attention transfer fits the linear forms to.
- ``delta.py`` (+ ``delta_chunked.py``, ``reference_delta.py``): the delta rule and the gated
  delta rule (DeltaNet / Gated DeltaNet), S_i = g_i (I - beta_i k_i k_i^T) S_{i-1} +
  beta_i k_i v_i^T with L2-normalised features, out_i = S_i^T q_i unnormalised (no z: the
  module applies an RMS norm). One signature ``(phi_q, phi_k, v, beta, gate=None, eps=...,
  chunk_size=..., initial_state=None, return_state=False)``, beta/gate (B, H, T), state
  (B, H, F, D): ``delta_reference`` (token by token), ``delta_chunked`` (WY form, training),
  ``delta_step`` (one token, ``state=``), ``empty_delta_state``, ``mask_padded_gate`` (padded
  positions: zero features and gate 1).
- ``gate.py``: the gated state S_i = diag(g_i) S_{i-1} + phi_k_i v_i^T (z likewise), gates per
  head or per feature given as per-token log-gates: ``causal_gated`` (chunked, exact, log space,
  the state crossing chunks by ``gate_scan.py``'s scan with a written-out backward) and
  ``gated_step``; ``normalize=False`` returns phi_q . S (for an RMS norm).
  Per-feature gates run ``gate_feature.py``'s ``causal_gated_feature`` (the same scan across
  chunks, exact halving within them; backwards written out).
- ``decay.py``: a per-head decay g_h (RetNet): ``causal_decay``, ``decay_step``,
  ``decay_log_gates`` (padded positions get g = 1: they leave the state as if absent).
  Their reference is ``reference.causal_gated_reference``.

A new state update (decay, gates, delta rule) arrives as a new file, e.g. ``decay.py``, holding
its forms under the same signature with its per-token tensors after v:
``causal_X(phi_q, phi_k, v, <gates>, eps=..., chunk_size=..., initial_state=..., return_state=...)``
and ``X_step(phi_q, phi_k, v, <gates>, state, eps=...) -> (out, state)``, built on ``common.py``
only. Its naive reference is added to ``reference.py``, its names to the imports below, and, if
training should pick among its forms, its policy to ``dispatch.py``; no existing form file changes.
"""
from .chunked import causal_chunked  # noqa: F401
from .common import (  # noqa: F401
    DEFAULT_CHUNK_SIZE,
    DEFAULT_EPS,
    State,
    autocast_off,
    causal_mask,
    compute_dtype,
    mask_padded_keys,
)
from .decay import causal_decay, decay_log_gates, decay_step  # noqa: F401
from .delta import (  # noqa: F401
    DEFAULT_DELTA_CHUNK_SIZE,
    DEFAULT_NORM_EPS,
    delta_step,
    empty_delta_state,
    l2_normalize,
    mask_padded_gate,
)
from .delta_chunked import delta_chunked  # noqa: F401
from .dispatch import (  # noqa: F401
    QUADRATIC_MAX_LEN,
    causal_parallel,
    delta_parallel,
    gated_parallel,
    parallel_form,
    state_form,
)
from .fla import causal_fla, fla_kernel  # noqa: F401
from .fla_states import causal_gated_fla, delta_fla, fla_state_kernel  # noqa: F401
from .fused_relu import causal_relu_from_input  # noqa: F401
from .gate import causal_gated, gated_step  # noqa: F401
from .gate_feature import FEATURE_GATE_CHUNK_SIZE, causal_gated_feature  # noqa: F401
from .quadratic import causal_quadratic, linear_attention_weights, noncausal  # noqa: F401
from .recurrent import attend_state, empty_state, join_state, recurrent_step, split_state, summarize_keys  # noqa: F401
from .reference import causal_gated_reference, causal_reference, noncausal_reference  # noqa: F401
from .reference_delta import delta_reference  # noqa: F401
from .softmax import softmax_attention  # noqa: F401
