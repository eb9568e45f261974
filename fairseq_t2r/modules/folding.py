"""The feature map's linear part folded into the query/key projections (REFERENCE §1).

For maps phi(x) = act(W_h x + b_h) (``FeatureMap.linear_part`` is not None), with scale s:

    phi(s (W_q x + b_q)) = act(W_h (s W_q x + s b_q) + b_h) = act((s W_h W_q) x + (s W_h b_q + b_h))

so one (H*F, C) matmul gives the features' pre-activations, instead of a (C, C) one and H (F, D)
ones; queries and keys of size head_dim are never built. ``T2RAttention.merge_projections =
False`` switches folding off (the benchmarks measure what it gives).

Under autograd (training) every folded map is rebuilt at each call, so gradients reach W_q, b_q,
W_h and b_h exactly as through the separate maps; at inference (eval mode, no autograd) it is
cached until any tensor it was built from changes (in place or replaced).
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

Linear = Tuple[Tensor, Optional[Tensor]]  # (weight (rows, C), bias (rows) or None)


def weights_stamp(*modules: nn.Module) -> tuple:
    """Storage and version of every direct tensor of ``modules``: a weight derived from them and
    cached at inference is stale when this changes (in place: the version; replaced, or moved by
    ``.to()`` / ``.double()``: the storage)."""
    stamp = []
    for m in modules:
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is not None:
                stamp.append(t.data_ptr())
                stamp.append(t._version)
    return tuple(stamp)


class FoldedProjections:
    """The folded projections of one ``T2RAttention`` (``attn``), built on demand, cached at
    inference in ``cache`` (name -> (stamp of the source tensors, folded map))."""

    def __init__(self, attn: nn.Module):
        self.attn = attn
        self.cache: Dict[str, tuple] = {}

    @property
    def active(self) -> bool:
        """Whether queries and keys go through folded projections."""
        return self.attn.merge_projections and self.attn.feature_map.linear_part() is not None

    def query(self) -> Optional[Linear]:
        """Folded (s W_h W_q, s W_h b_q + b_h) with s = head_dim**-0.5, rows per head; None when
        folding is off."""
        return self._fold("q", self.attn.q_proj, self.attn.scaling)

    def key(self) -> Optional[Linear]:
        """Folded (W_h W_k, W_h b_k + b_h), rows per head; None when folding is off."""
        return self._fold("k", self.attn.k_proj, 1.0)

    def query_key(self) -> Linear:
        """Self-attention, folding active: rows [query maps of every head | key maps of every
        head], so that one matmul gives both pre-activations."""
        mq, mk = self.query(), self.key()
        return torch.cat([mq[0], mk[0]], 0), (None if mq[1] is None else torch.cat([mq[1], mk[1]], 0))

    def query_key_value(self) -> Linear:
        """Folding active: per head [query pre-features | key pre-features | values], the layout
        ``ops.causal_relu_from_input`` takes (rebuilt under autograd, like every folded map)."""
        v = self.attn.v_proj
        return self._stack_per_head(self.query(), self.key(), (v.weight, v.bias))

    def step(self) -> Linear:
        """Inference only: the single map that gives, for one token of self-attention, per head
        [query features' pre-activations | key features' pre-activations] (or, for maps without a
        linear part -- elu, rfa, performer -- with folding off, or with a sliding window, which
        needs q and k themselves for its scores, [s W_q x | W_k x], mapped afterwards), then per
        head [v, 1].

        Per head, so that every slice the step takes is a view; the ones column (zero weights,
        bias 1) makes the state update phi(k) [v, 1]^T accumulate S and z together."""
        a = self.attn
        windowed = getattr(a, "windowed", False)
        stamp = self._stamp(a.q_proj, a.k_proj, a.v_proj) + (a.merge_projections, windowed)
        cached = self.cache.get("step")
        if cached is not None and cached[0] == stamp:
            return cached[1]
        H, D, C = a.num_heads, a.head_dim, a.embed_dim
        mq = None if windowed else self.query()
        if mq is not None:
            mk = self.key()
        else:
            mq = (a.q_proj.weight * a.scaling, None if a.q_proj.bias is None else a.q_proj.bias * a.scaling)
            mk = (a.k_proj.weight, a.k_proj.bias)
        ref = a.v_proj.weight
        wv = torch.cat([ref.view(H, D, C), ref.new_zeros(H, 1, C)], 1).view(H * (D + 1), C)
        bv = ref.new_zeros(H, D + 1)
        if a.v_proj.bias is not None:
            bv[:, :D] = a.v_proj.bias.view(H, D)
        bv[:, D] = 1.0
        wqk, bqk = self._stack_per_head(mq, mk)
        if bqk is None:
            bqk = ref.new_zeros(wqk.size(0))
        result = (torch.cat([wqk, wv], 0), torch.cat([bqk, bv.view(-1)], 0))
        self.cache["step"] = (stamp, result)
        return result

    def _fold(self, name: str, proj: nn.Module, scale: float) -> Optional[Linear]:
        """(weight (H*F, C), bias (H*F) or None) of ``proj`` scaled by ``scale`` and folded into the
        feature map's linear part; None when folding is off."""
        if not self.active:
            return None
        a = self.attn
        inference = not a.training and not torch.is_grad_enabled()
        if inference:
            stamp = self._stamp(proj)
            cached = self.cache.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        fm_w, fm_b = a.feature_map.linear_part()
        H, D = a.num_heads, a.head_dim
        w = torch.matmul(fm_w, proj.weight.view(H, D, -1)) * scale  # (H, F, C)
        b = None
        if proj.bias is not None:
            b = torch.matmul(fm_w, proj.bias.view(H, D, 1)).squeeze(-1) * scale
        if fm_b is not None:
            b = fm_b if b is None else b + fm_b
        folded = (w.reshape(-1, w.size(-1)), None if b is None else b.reshape(-1))
        if inference:
            self.cache[name] = (stamp, folded)
        return folded

    def _stamp(self, *modules: nn.Module) -> tuple:
        """Storage and version of every tensor a cached map is built from, the feature map's
        included (cheap: it is checked at every generation step)."""
        return weights_stamp(*modules, self.attn.feature_map)

    def _stack_per_head(self, *maps: Linear) -> Linear:
        """Linear maps (weight (H * X_i, C), bias or None) stacked per head: rows [map 0 | map 1 |
        ...] of head 0, then of head 1, ...; the bias is None only if every map has none."""
        H, C = self.attn.num_heads, self.attn.embed_dim
        weight = torch.cat([w.view(H, -1, C) for w, _ in maps], 1).view(-1, C)
        if all(b is None for _, b in maps):
            return weight, None
        biases = [(w.new_zeros(w.size(0)) if b is None else b).view(H, -1) for w, b in maps]
        return weight, torch.cat(biases, 1).view(-1)
