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

The layout: one folder per algorithm, each with its naive reference beside its fast forms, its
one-token step and its optional GPU glue; what all share at the top.
- ``common.py``: defaults (``DEFAULT_EPS``, ``DEFAULT_CHUNK_SIZE``), ``State`` = (S, z) and
  ``empty_state``, ``Step`` (the one step signature), the precision rule, ``autocast_off``,
  ``mask_padded_keys``, ``mask_padded_log_gates``, ``causal_mask``, ``refuse_inputs``.
- ``additive/`` (T2R): ``naive.py`` (``causal_reference``, ``noncausal_reference``: token by token,
  independent of every other form), ``quadratic.py`` (``causal_quadratic``, ``noncausal``,
  ``linear_attention_weights``: the (T, T) weight forms, the only ones that drop attention
  weights), ``chunked.py`` + ``chunked_passes.py`` (``causal_chunked``: O(T * C) work, memory
  linear in T, a backward that recomputes the chunk states; continues from / returns a State),
  ``fused_relu.py`` (``causal_relu_from_input``: projection, relu and the chunked form in one
  Function), ``step.py`` (``recurrent_step``, ``split_state`` / ``join_state``,
  ``summarize_keys`` / ``attend_state`` for cross-attention), ``fla.py`` (``causal_fla``) and
  ``triton.py`` (``causal_triton``; never imported unless ``dispatch`` picks it).
- ``gated/`` (decay, gates per head or per feature; per-token log-gates, 0 where padded):
  ``naive.py`` (``causal_gated_reference``), ``chunked.py`` (``causal_gated``, exact in log
  space, and ``gated_step``), ``feature.py`` + ``scan.py`` (per-feature gates; the chunk-to-chunk
  scan with its written-out backward), ``decay.py`` (``decay_log_gates``: a per-head decay as
  per-token log-gates for the gated forms), ``fla.py`` (``causal_gated_fla``: fla's
  ``chunk_simple_gla`` / ``chunk_gla``).
- ``delta/`` (delta rule, gated delta rule; L2-normalised features, no z, unnormalised output;
  log-gates and beta (B, H, T)): ``naive.py`` (``delta_reference``), ``chunked.py``
  (``delta_chunked``, the WY form), ``step.py`` (``delta_step``, ``l2_normalize``,
  ``empty_delta_state``), ``fla.py`` (``delta_fla``: fla's ``chunk_gated_delta_rule``).
- ``window/`` (softmax over the last W tokens beside a linear state; its own docstring):
  ``window_step`` is its step (under the same signature, with the softmax q, k as options).
- ``dispatch.py``: which form training runs and on which backend: ``causal_parallel``
  (``parallel_form``: quadratic up to ``QUADRATIC_MAX_LEN`` or with weight dropout, else on CUDA
  the Triton kernels, fla, or chunked), ``gated_parallel`` / ``delta_parallel`` (``state_form``:
  ours, or fla on CUDA); the backend switches (``FAIRSEQ_T2R_FLA``, ``FAIRSEQ_T2R_TRITON``) read
  once there, set by ``set_backends`` / ``backends``.
- ``kernels.py``: the optional packages' kernels, looked up once (``fla_kernel``,
  ``fla_state_kernel``).
- ``softmax.py``: ``softmax_attention``, the target attention transfer fits the linear forms to.

One gate convention and one signature (``docs/DESIGN.md``, "One gate convention and one step
signature"): a forget gate is always given as its log, ``log_g`` = log g <= 0 (fla's ``g``), per
token, 0 at a padded position; per-token inputs come after v in the order ``log_g``, ``beta``
(fla's order), and everything after them is keyword-only, so that no caller can pass eps where
another form takes a per-token tensor. Every one-token step (``STEPS``) has the signature ``common.Step``:
``X_step(phi_q, phi_k, v, log_g=None, beta=None, *, state=None, eps=..., inplace=False,
<its own options>) -> (out, state)``, refusing the inputs it does not take; the parallel forms of
a gated or delta algorithm take ``(phi_q, phi_k, v, <its per-token inputs>, *, eps=...,
chunk_size=..., initial_state=..., return_state=..., <its own options>)``, the state being the one
its step keeps.

A new algorithm is a new folder: ``naive.py`` (its token-by-token reference, built on
``common.py`` only) beside its fast forms under those signatures; its names in the imports
below, its step in ``STEPS`` and, if training should pick among its forms, its policy in
``dispatch.py``. The module side of a state (its tensors and which forms it calls) is a class in
``modules/states/``.
"""
from .additive.chunked import causal_chunked  # noqa: F401
from .additive.fla import causal_fla  # noqa: F401
from .additive.fused_relu import causal_relu_from_input  # noqa: F401
from .additive.naive import causal_reference, noncausal_reference  # noqa: F401
from .additive.quadratic import causal_quadratic, linear_attention_weights, noncausal  # noqa: F401
from .additive.step import (  # noqa: F401
    attend_state,
    join_state,
    recurrent_step,
    split_state,
    summarize_keys,
)
from .common import (  # noqa: F401
    DEFAULT_CHUNK_SIZE,
    DEFAULT_EPS,
    State,
    Step,
    autocast_off,
    causal_mask,
    compute_dtype,
    empty_state,
    mask_padded_keys,
    mask_padded_log_gates,
    refuse_inputs,
)
from .delta.chunked import delta_chunked  # noqa: F401
from .delta.fla import delta_fla  # noqa: F401
from .delta.naive import delta_reference  # noqa: F401
from .delta.step import (  # noqa: F401
    DEFAULT_DELTA_CHUNK_SIZE,
    DEFAULT_NORM_EPS,
    delta_step,
    empty_delta_state,
    l2_normalize,
)
from .dispatch import (  # noqa: F401
    QUADRATIC_MAX_LEN,
    backends,
    causal_parallel,
    delta_parallel,
    gated_parallel,
    parallel_form,
    set_backends,
    state_form,
)
from .gated.chunked import causal_gated, gated_step  # noqa: F401
from .gated.decay import decay_log_gates  # noqa: F401
from .gated.feature import FEATURE_GATE_CHUNK_SIZE, causal_gated_feature  # noqa: F401
from .gated.fla import causal_gated_fla  # noqa: F401
from .gated.naive import causal_gated_reference  # noqa: F401
from .kernels import fla_kernel, fla_state_kernel  # noqa: F401
from .softmax import softmax_attention  # noqa: F401
from .window.step import window_step  # noqa: F401

# every algorithm's one-token step, each under the signature ``common.Step``
STEPS = {"additive": recurrent_step, "gated": gated_step, "delta": delta_step, "window": window_step}
