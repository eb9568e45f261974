"""Attention transfer (stage one of the conversion): what a T2R module records while it is taught.

``recording(model)`` gives every T2RAttention of ``model`` a ``TransferRecord`` for the duration
of a block; each parallel forward then records its linear output next to the softmax output of
the same q, k, v, and passes the *softmax* output on (``teacher_force``): every layer sees the
softmax model's hidden states, so each feature map is fitted to its own layer's attention,
independently of the others (as LoLCATs does). ``criterions/attention_transfer.py`` turns the
records into the loss.
"""
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

from torch import Tensor, nn

from .. import ops


@dataclass
class TransferRecord:
    """One module's outputs during a recorded forward, per head before out_proj."""

    weights: bool = False  # also record the (B, H, T, S) attention weights of both sides
    linear: Optional[Tensor] = None  # (B, H, T, D): the linear attention's output
    softmax: Optional[Tensor] = None  # (B, H, T, D): the softmax attention's output (passed on)
    linear_weights: Optional[Tensor] = None  # (B, H, T, S), when ``weights``
    softmax_weights: Optional[Tensor] = None  # (B, H, T, S), when ``weights``


class Recordable:
    """Marks the modules ``recording`` gives a record to (T2RAttention): each holds
    ``transfer: Optional[TransferRecord]`` and calls ``teacher_force`` when it is set."""

    transfer: Optional[TransferRecord] = None


def module_label(path: str) -> str:
    """'decoder.layers.3.self_attn' -> 'l3'; '...layers.3.encoder_attn' -> 'l3_cross'."""
    m = re.search(r"layers\.(\d+)\.(self_attn|encoder_attn)$", path)
    if m is None:
        return re.sub(r"\W", "_", path)
    return f"l{m.group(1)}" + ("_cross" if m.group(2) == "encoder_attn" else "")


@contextmanager
def recording(model: nn.Module, weights: bool = False) -> Iterator[Dict[str, TransferRecord]]:
    """Within the block, every parallel forward of a T2R module of ``model`` records its linear and
    softmax outputs (and, with ``weights``, both weight matrices) and passes the softmax output on.
    Yields {module_label: record}; a record's ``linear`` stays None if its module did not run."""
    modules = [(module_label(n), m) for n, m in model.named_modules() if isinstance(m, Recordable)]
    records = {}
    for label, m in modules:
        records[label] = m.transfer = TransferRecord(weights=weights)
    try:
        yield records
    finally:
        for _, m in modules:
            m.transfer = None


def teacher_force(attn, out: Tensor, query: Tensor, key: Tensor, value: Tensor,
                  key_padding_mask: Optional[Tensor]) -> Tensor:
    """Record ``attn``'s linear output ``out`` (B, H, T, D) in ``attn.transfer`` next to the
    softmax output of the same q, k, v (as fairseq's MultiheadAttention computes it; query (T, B, C),
    key and value (S, B, C)), and return the softmax output, detached, to be passed on."""
    rec = attn.transfer
    q = attn._heads(attn.q_proj(query) * attn.scaling)
    k = attn._heads(attn.k_proj(key))
    soft, weights = ops.softmax_attention(
        q, k, attn._heads(attn.v_proj(value)), key_padding_mask, causal=attn.self_attention
    )
    rec.linear, rec.softmax = out, soft
    if rec.weights:
        phi_q = attn.feature_map.forward_queries(q)
        phi_k = ops.mask_padded_keys(attn.feature_map.forward_keys(k), key_padding_mask)
        rec.softmax_weights = weights
        rec.linear_weights = linear_weights(attn, phi_q, phi_k, query, key_padding_mask)
    return soft.detach()


def linear_weights(attn, phi_q: Tensor, phi_k: Tensor, x: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """The (B, H, T, S) weights of ``attn``'s linear attention: cross-attention's plain ones, else
    its state update's (a decayed or gated state weighs key j at query i by the gates between
    them as well: exactly the matrix its outputs use; with ``--t2r-window`` the window's softmax and
    the delayed state's terms in one matrix, ``SlidingWindow.attention_weights``). Only states whose
    ``weights_are_distributions`` have weights that are distributions."""
    if not attn.self_attention:
        return ops.linear_attention_weights(phi_q, phi_k, False, attn.eps)
    if attn.windowed:
        return attn.window.attention_weights(attn, x, key_padding_mask, phi_q, phi_k)
    return attn.state_update.attention_weights(phi_q, phi_k, x, attn.k_proj, key_padding_mask, attn.eps)


def weights_are_distributions(attn) -> bool:
    """Whether ``attn``'s linear weights are distributions over the keys (rows sum to 1, >= 0), so
    that a cross-entropy against the softmax's weights means something: not with the delta rule
    (its weights are signed) or the RMS norm (it normalises outputs, not weights)."""
    return attn.state_update.weights_are_distributions
