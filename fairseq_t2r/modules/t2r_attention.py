"""T2RAttention: a drop-in replacement for fairseq's MultiheadAttention with linear attention.

Same parameter names and shapes as MultiheadAttention (q_proj, k_proj, v_proj, out_proj), so a
softmax checkpoint's tensors load unchanged; the only new tensors live in ``feature_map``.
The math is in ``fairseq_t2r.ops.linear_attention``; this file is the fairseq wiring:
projections, heads, dropout, and the recurrent state kept in fairseq's incremental state.

Incremental state (batch-major, so beam search reorders it with index_select on dim 0):
- causal self-attention: ``Sz`` (B, H, F, D + 1) = [S | z], the running sums S (F, D) and z (F)
  side by side, so that one matmul with phi(q) gives numerator and denominator; its size never
  depends on how many tokens were consumed.
- cross-attention: ``Sz_src`` (same layout), the source summary, computed once at the first step
  (once per sentence, not per beam hypothesis, when ``set_beam_size`` was called) and reused.

Inference (eval mode, no autograd) decodes one token with one fused projection
(``_step_projection``: feature-mapped queries and keys, values with a ones column appended per head,
in a single matmul), one in-place state update and one matmul against the state.

Training and scoring of self-attention with the ``t2r`` (relu) map, at lengths where the chunked
form runs, go from the layer input in one op (``ops.causal_relu_from_input``: projection, relu and
attention with the memory of one projection); other maps and short sequences project first and
call ``ops.causal_parallel``.
"""
from typing import Dict, Optional, Tuple

import torch
from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.modules import MultiheadAttention
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import Tensor, nn

from ..errors import T2RUserError
from .. import ops
from .feature_maps import build_feature_map


@with_incremental_state
class T2RAttention(nn.Module):
    # Attention transfer (criterions/attention_transfer.py): a dict while that criterion runs a
    # forward, else None -- a class attribute, so the normal forward pays one attribute test.
    transfer_record: Optional[dict] = None

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        q_proj: nn.Module,
        k_proj: nn.Module,
        v_proj: nn.Module,
        out_proj: nn.Module,
        feature_map: str = "t2r",
        feature_dim: int = 32,
        dropout: float = 0.0,
        encoder_decoder_attention: bool = False,
        eps: float = ops.DEFAULT_EPS,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise T2RUserError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.scaling = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.feature_map = build_feature_map(feature_map, num_heads, self.head_dim, feature_dim)
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        self.encoder_decoder_attention = encoder_decoder_attention
        self.self_attention = not encoder_decoder_attention
        self.eps = eps
        self.beam_size = 1
        # fold the feature MLP into q_proj / k_proj (maps act(W x + b) only); False keeps them apart
        self.merge_projections = True
        self._merged_cache = {}  # inference-only folded projections, see _merged_projection
        self.init_incremental_state()

    @classmethod
    def from_softmax(cls, mha: MultiheadAttention, feature_map: str, feature_dim: int, eps=ops.DEFAULT_EPS):
        """Build from a MultiheadAttention, taking over its projection modules as they are."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise T2RUserError("attention with --add-bias-kv / --add-zero-attn cannot be converted to T2R")
        return cls(
            mha.embed_dim,
            mha.num_heads,
            mha.q_proj,
            mha.k_proj,
            mha.v_proj,
            mha.out_proj,
            feature_map=feature_map,
            feature_dim=feature_dim,
            dropout=mha.dropout_module.p,
            encoder_decoder_attention=mha.encoder_decoder_attention,
            eps=eps,
        )

    # -- shapes -----------------------------------------------------------------------------
    def _heads(self, x: Tensor) -> Tensor:
        # (T, B, C) -> (B, H, T, D)
        T, B, _ = x.shape
        return x.view(T, B, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _unheads(self, x: Tensor) -> Tensor:
        # (B, H, T, D) -> (T, B, C)
        B, H, T, D = x.shape
        return x.permute(2, 0, 1, 3).reshape(T, B, H * D)

    # -- features ---------------------------------------------------------------------------
    def _phi_queries(self, query: Tensor) -> Tensor:
        merged = self._merged_projection("q", self.q_proj, self.scaling)
        if merged is not None:
            return self._merged_features(query, *merged)
        return self.feature_map.forward_queries(self._heads(self.q_proj(query) * self.scaling))

    def _phi_keys(self, key: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        merged = self._merged_projection("k", self.k_proj, 1.0)
        if merged is not None:
            phi_k = self._merged_features(key, *merged)
        else:
            phi_k = self.feature_map.forward_keys(self._heads(self.k_proj(key)))
        return ops.mask_padded_keys(phi_k, key_padding_mask)

    def _phi_queries_keys(self, query: Tensor, key: Tensor, key_padding_mask: Optional[Tensor]):
        """phi(q), phi(k); self-attention with merged projections makes both in one matmul."""
        if key is query:
            mq = self._merged_projection("q", self.q_proj, self.scaling)
            if mq is not None:
                mk = self._merged_projection("k", self.k_proj, 1.0)
                w = torch.cat([mq[0], mk[0]], 0)
                b = None if mq[1] is None else torch.cat([mq[1], mk[1]], 0)
                T, B, _ = query.shape
                y = nn.functional.linear(query, w, b).view(T, B, 2 * self.num_heads, -1)
                phi = self.feature_map.activate(y, inplace=True).permute(1, 2, 0, 3)  # (B, 2H, T, F)
                phi_q, phi_k = phi.split(self.num_heads, 1)
                return phi_q, ops.mask_padded_keys(phi_k, key_padding_mask)
        return self._phi_queries(query), self._phi_keys(key, key_padding_mask)

    def _merged_features(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        T, B, _ = x.shape
        y = nn.functional.linear(x, weight, bias).view(T, B, self.num_heads, -1).permute(1, 2, 0, 3)
        return self.feature_map.activate(y)

    def _mergeable(self) -> bool:
        return self.merge_projections and hasattr(self.feature_map, "linear_part")

    def _merged_projection(self, which: str, proj: nn.Module, scale: float):
        """(weight, bias) of projection and feature map folded into one linear map, or None.

        phi(s * (W_q x + b_q)) = act(W_h (s W_q x + s b_q) + b_h) = act((s W_h W_q) x + (s W_h b_q + b_h)):
        one (H*F, C) matmul instead of a (C, C) one and H (F, D) ones. With autograd (training) the
        folded weights are rebuilt at every call, so gradients reach W_q, b_q, W_h and b_h exactly
        as through the separate maps; at inference (eval mode, no autograd) they are cached until
        any of the tensors they were built from changes.
        """
        if not self._mergeable():
            return None
        inference = not self.training and not torch.is_grad_enabled()
        if inference:
            key = self._version_key(proj)
            cached = self._merged_cache.get(which)
            if cached is not None and cached[0] == key:
                return cached[1]
        fm_w, fm_b = self.feature_map.linear_part()
        H, D = self.num_heads, self.head_dim
        w = torch.matmul(fm_w, proj.weight.view(H, D, -1)) * scale  # (H, F, C)
        b = None
        if proj.bias is not None:
            b = torch.matmul(fm_w, proj.bias.view(H, D, 1)).squeeze(-1) * scale
        if fm_b is not None:
            b = fm_b if b is None else b + fm_b
        merged = (w.reshape(-1, w.size(-1)), None if b is None else b.reshape(-1))
        if inference:
            self._merged_cache[which] = (key, merged)
        return merged

    def _version_key(self, *modules):
        """Storage and version of every tensor a cached folded weight is built from (cheap: it
        is checked at every generation step)."""
        key = []
        for m in modules + (self.feature_map,):
            for t in m._parameters.values():
                if t is not None:
                    key.append(t.data_ptr())
                    key.append(t._version)
            for t in m._buffers.values():
                if t is not None:
                    key.append(t.data_ptr())
                    key.append(t._version)
        return tuple(key)

    def _step_projection(self):
        """Inference only: (weight, bias) of the single linear map that gives, for one token of
        self-attention, per head [query features' pre-activations | key features' pre-activations]
        (or, for maps without a linear part -- elu, rfa, performer -- [s W_q x | W_k x], mapped
        afterwards), then per head [v, 1].

        Per head, so that every slice the step takes is a view; the ones column (zero weights,
        bias 1) makes the state update phi(k) [v, 1]^T accumulate S and z together. Cached like
        ``_merged_projection``.
        """
        key = self._version_key(self.q_proj, self.k_proj, self.v_proj) + (self.merge_projections,)
        cached = self._merged_cache.get("step")
        if cached is not None and cached[0] == key:
            return cached[1]
        H, D, C = self.num_heads, self.head_dim, self.embed_dim
        mq = self._merged_projection("q", self.q_proj, self.scaling)
        if mq is not None:
            mk = self._merged_projection("k", self.k_proj, 1.0)
        else:
            mq = (self.q_proj.weight * self.scaling, None if self.q_proj.bias is None else self.q_proj.bias * self.scaling)
            mk = (self.k_proj.weight, self.k_proj.bias)
        ref = self.v_proj.weight
        wv = torch.cat([ref.view(H, D, C), ref.new_zeros(H, 1, C)], 1).view(H * (D + 1), C)
        bv = ref.new_zeros(H, D + 1)
        if self.v_proj.bias is not None:
            bv[:, :D] = self.v_proj.bias.view(H, D)
        bv[:, D] = 1.0
        wqk, bqk = self._stack_per_head(mq, mk)
        if bqk is None:
            bqk = ref.new_zeros(wqk.size(0))
        result = (torch.cat([wqk, wv], 0), torch.cat([bqk, bv.view(-1)], 0))
        self._merged_cache["step"] = (key, result)
        return result

    def _weight_dropout(self):
        # attention transfer fits the maps to the deterministic softmax weights: no dropout then
        if self.training and self.dropout_module.p > 0 and self.transfer_record is None:
            return self.dropout_module
        return None

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        # Linear attention never materialises attention weights outside the quadratic
        # training form, so none are returned (fairseq treats None as "not available").
        # attn_mask is the causal mask fairseq passes in training; causality is built in.
        if self.training and self.feature_map.is_random and incremental_state is None:
            self.feature_map.new_feature_map()
        if (
            incremental_state is not None
            and query.size(0) == 1
            and not self.training
            and not torch.is_grad_enabled()
        ):
            # generation: one token through the fused inference step
            if self.encoder_decoder_attention:
                return self._cross_attention_step(query, key, value, key_padding_mask, incremental_state), None
            return self._self_attention_step(query, key, value, key_padding_mask, incremental_state), None
        if not self.encoder_decoder_attention and self._fused_from_input(query, key, value, incremental_state):
            weight, bias = self._fused_projection()
            out = ops.causal_relu_from_input(
                query, weight, bias, self.num_heads, self.feature_map.output_dim, key_padding_mask, self.eps
            )
            return self.out_proj(out), None
        if self.encoder_decoder_attention:
            out = self._cross_attention(query, key, value, key_padding_mask, incremental_state)
        else:
            out = self._causal_self_attention(query, key, value, key_padding_mask, incremental_state)
        if self.transfer_record is not None and incremental_state is None:
            out = self._transfer(out, query, key, value, key_padding_mask)
        return self.out_proj(self._unheads(out)), None

    def _fused_from_input(self, query, key, value, incremental_state) -> bool:
        """Whether this call runs ``ops.causal_relu_from_input``: a parallel (training or scoring)
        call of self-attention with relu features long enough for the chunked form."""
        return (
            incremental_state is None
            and key is query
            and value is query
            and self.feature_map.relu_of_linear
            and self._mergeable()
            and self.transfer_record is None
            and ops.parallel_form(query.size(0), query.is_cuda, self._weight_dropout() is not None) == "chunked"
        )

    def _fused_projection(self):
        """(weight, bias) of [query pre-features | key pre-features | values] per head, the layout
        ``ops.causal_relu_from_input`` takes (rebuilt under autograd, like the folded maps)."""
        mq = self._merged_projection("q", self.q_proj, self.scaling)
        mk = self._merged_projection("k", self.k_proj, 1.0)
        return self._stack_per_head(mq, mk, (self.v_proj.weight, self.v_proj.bias))

    def _stack_per_head(self, *maps):
        """Linear maps (weight (H * X_i, C), bias or None) stacked per head: rows [map 0 | map 1 |
        ...] of head 0, then of head 1, ...; the bias is None only if every map has none."""
        H, C = self.num_heads, self.embed_dim
        weight = torch.cat([w.view(H, -1, C) for w, _ in maps], 1).view(-1, C)
        if all(b is None for _, b in maps):
            return weight, None
        biases = [(w.new_zeros(w.size(0)) if b is None else b).view(H, -1) for w, b in maps]
        return weight, torch.cat(biases, 1).view(-1)

    def _causal_self_attention(self, query, key, value, key_padding_mask, incremental_state):
        phi_q, phi_k = self._phi_queries_keys(query, key, key_padding_mask)
        v = self._heads(self.v_proj(value))
        if incremental_state is None:
            return ops.causal_parallel(phi_q, phi_k, v, self.eps, self._weight_dropout())
        buf = self._get_input_buffer(incremental_state)
        state = _split_state(buf["Sz"]) if "Sz" in buf else ops.empty_state(phi_k, v)
        if phi_q.size(2) == 1:
            out, (S, z) = ops.recurrent_step(phi_q, phi_k, v, state, self.eps)
        else:  # several tokens at once (e.g. a prompt): parallel form continuing the state
            out, (S, z) = ops.causal_chunked(phi_q, phi_k, v, self.eps, initial_state=state, return_state=True)
        buf["Sz"] = torch.cat([S, z.unsqueeze(-1)], -1)
        self._set_input_buffer(incremental_state, buf)
        return out

    def _read_state(self, phi_q: Tensor, Sz: Tensor, dtype) -> Tensor:
        """phi_q (N, R, F) against Sz (N, F, D + 1): (N, R, D) = num / max(den, eps)."""
        if phi_q.dtype != Sz.dtype:
            phi_q = phi_q.to(Sz.dtype)
        nd = torch.bmm(phi_q, Sz)
        out = nd[..., :-1] / nd[..., -1:].clamp_(min=self.eps)
        return out if out.dtype == dtype else out.to(dtype)

    def _out_proj_step(self, out: Tensor, B: int) -> Tensor:
        # the module's own weights without nn.Module's call machinery (this runs per layer and token)
        proj = self.out_proj
        return nn.functional.linear(out.reshape(B, self.embed_dim), proj.weight, proj.bias).unsqueeze(0)

    def _self_attention_step(self, query, key, value, key_padding_mask, incremental_state):
        """One token through the fused projection, one in-place state update, one read-out: written
        for few tensor operations, since it runs once per layer and generated token."""
        if key is not query or value is not query:  # not how fairseq calls it: the plain path
            out = self._causal_self_attention(query, key, value, key_padding_mask, incremental_state)
            return self.out_proj(self._unheads(out))
        weight, bias = self._step_projection()
        H, D = self.num_heads, self.head_dim
        x = query[0]
        B = x.size(0)
        y = torch.addmm(bias, x, weight.t())
        nqk = y.size(1) - H * (D + 1)
        qk = y[:, :nqk].view(B, H, 2, -1)
        fm = self.feature_map
        if self._mergeable():
            phi = fm.activate(qk)
            phi_q, phi_k = phi[:, :, :1], phi[:, :, 1]  # (B, H, 1, F), (B, H, F)
        else:
            phi_q, phi_k = fm.forward_queries(qk[:, :, :1]), fm.forward_keys(qk[:, :, 1:]).squeeze(2)
        v1 = y[:, nqk:].view(B, H, 1, D + 1)
        if key_padding_mask is not None:
            phi_k = phi_k.masked_fill(key_padding_mask[:, -1:].to(torch.bool).view(B, 1, 1), 0.0)
        ct = ops.compute_dtype(query.dtype)
        if v1.dtype != ct:
            phi_k, v1 = phi_k.to(ct), v1.to(ct)
        buf = self._get_input_buffer(incremental_state)
        Sz = buf.get("Sz")
        if Sz is None:
            buf["Sz"] = Sz = phi_k.unsqueeze(-1) * v1  # (B, H, F, D + 1)
            self._set_input_buffer(incremental_state, buf)
        else:
            # in place: the state tensor is this module's own (made here, or by the index_select
            # of reorder_incremental_state), and no autograd is recording
            Sz.addcmul_(phi_k.unsqueeze(-1), v1)
        F = Sz.size(2)
        out = self._read_state(phi_q.reshape(B * H, 1, F), Sz.view(B * H, F, D + 1), query.dtype)
        return self._out_proj_step(out, B)

    def _cross_attention_step(self, query, key, value, key_padding_mask, incremental_state):
        buf = self._get_input_buffer(incremental_state)
        if "Sz_src" not in buf:
            self._summarize_source(query, key, value, key_padding_mask, incremental_state, buf)
        Sz = buf["Sz_src"]
        phi_q = self._phi_queries(query)[:, :, 0]  # (B, H, F)
        B, H, F = phi_q.shape
        D1 = Sz.size(-1)
        nsent = Sz.size(0)
        # one summary per sentence (then B // nsent hypotheses per sentence read it) or per row
        g = B // nsent
        q = phi_q.view(nsent, g, H, F).transpose(1, 2).reshape(nsent * H, g, F)
        out = self._read_state(q, Sz.view(nsent * H, F, D1), query.dtype)
        out = out.view(nsent, H, g, D1 - 1).transpose(1, 2)  # (nsent, g, H, D)
        return self._out_proj_step(out, B)

    def _summarize_source(self, query, key, value, key_padding_mask, incremental_state, buf):
        group = self._source_group(key, query)
        if group > 1:
            # encoder_out was expanded to bsz * beam; every beam of a sentence has the same
            # source, so summarise one copy per sentence
            key = key.view(key.size(0), -1, group, key.size(2))[:, :, 0]
            value = value.view(value.size(0), -1, group, value.size(2))[:, :, 0]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.view(-1, group, key_padding_mask.size(1))[:, 0]
        phi_k = self._phi_keys(key, key_padding_mask)
        S, z = ops.summarize_keys(phi_k, self._heads(self.v_proj(value)))
        buf["Sz_src"] = torch.cat([S, z.unsqueeze(-1)], -1)
        buf["src_group"] = torch.tensor(group)  # rows (hypotheses) per summary
        self._set_input_buffer(incremental_state, buf)

    def _cross_attention(self, query, key, value, key_padding_mask, incremental_state):
        phi_q = self._phi_queries(query)
        buf = self._get_input_buffer(incremental_state) if incremental_state is not None else {}
        if incremental_state is None:
            phi_k = self._phi_keys(key, key_padding_mask)
            return ops.noncausal(phi_q, phi_k, self._heads(self.v_proj(value)), self.eps, self._weight_dropout())
        if "Sz_src" not in buf:
            self._summarize_source(query, key, value, key_padding_mask, incremental_state, buf)
        S, z = _split_state(buf["Sz_src"])
        nsent = S.size(0)
        if nsent == phi_q.size(0):
            return ops.attend_state(phi_q, (S, z), self.eps, out_dtype=query.dtype)
        # one summary per sentence, beam_size queries per sentence
        B, H, T, Fdim = phi_q.shape
        q = phi_q.view(nsent, -1, H, T, Fdim)
        out = ops.attend_state(q, (S.unsqueeze(1), z.unsqueeze(1)), self.eps, out_dtype=query.dtype)
        return out.reshape(B, H, T, -1)

    # -- attention transfer -----------------------------------------------------------------
    def _transfer(self, out, query, key, value, key_padding_mask):
        """Record this layer's linear output ``out`` (B, H, T, D) next to the softmax output of the
        same q, k, v (as fairseq's MultiheadAttention computes it), and pass the softmax output on:
        every layer then sees the softmax model's hidden states, so each feature map is fitted to
        its own layer's attention, independently of the others (as LoLCATs does). With
        ``transfer_record["weights"]`` true, also record both (B, H, T, S) weight matrices."""
        rec = self.transfer_record
        q = self._heads(self.q_proj(query) * self.scaling)
        k = self._heads(self.k_proj(key))
        soft, weights = ops.softmax_attention(
            q, k, self._heads(self.v_proj(value)), key_padding_mask, causal=self.self_attention
        )
        rec["linear"], rec["softmax"] = out, soft
        if rec.get("weights"):
            phi_q = self.feature_map.forward_queries(q)
            phi_k = ops.mask_padded_keys(self.feature_map.forward_keys(k), key_padding_mask)
            rec["softmax_weights"] = weights
            rec["linear_weights"] = ops.linear_attention_weights(phi_q, phi_k, self.self_attention, self.eps)
        return soft.detach()

    # -- incremental state (fairseq protocol) -----------------------------------------------
    def _get_input_buffer(self, incremental_state) -> Dict[str, Optional[Tensor]]:
        result = self.get_incremental_state(incremental_state, "attn_state")
        return result if result is not None else {}

    def _set_input_buffer(self, incremental_state, buffer):
        return self.set_incremental_state(incremental_state, "attn_state", buffer)

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        buf = self._get_input_buffer(incremental_state)
        if not buf:
            return incremental_state
        order = new_order
        group = int(buf["src_group"]) if buf.get("src_group") is not None else 1
        if group > 1:
            kind, order = self._sentence_order(new_order, group, buf["Sz_src"].size(0))
            if kind == "keep":
                return incremental_state  # beams only moved within their sentence
            if kind == "rows":  # rows no longer come in whole sentences: one summary per row from now on
                buf["src_group"] = torch.tensor(1)
        for k, v in buf.items():
            if v is not None and k != "src_group":
                buf[k] = v.index_select(0, order)
        return self._set_input_buffer(incremental_state, buf)

    _sentence_order_memo = None  # (new_order, group, summaries, version, result): shared by all layers

    @classmethod
    def _sentence_order(cls, new_order: Tensor, group: int, summaries: int):
        """How per-sentence source summaries follow a beam reordering: ("keep", None) when beams
        only moved within their sentence, ("sentences", order) to keep, drop or move whole
        sentences, ("rows", order) once rows no longer come in whole sentences (row r then reads
        summary new_order[r] // group). fairseq hands every layer the same new_order tensor, so
        the answer is computed once per step, not once per layer."""
        memo = cls._sentence_order_memo
        if memo is not None and memo[0] is new_order and memo[1:4] == (group, summaries, new_order._version):
            return memo[4]
        sent = new_order.div(group, rounding_mode="floor")
        if new_order.numel() % group == 0 and bool((sent.view(-1, group) == sent.view(-1, group)[:, :1]).all()):
            order = sent.view(-1, group)[:, 0]
            if order.numel() == summaries and bool((order == torch.arange(order.numel(), device=order.device)).all()):
                result = ("keep", None)
            else:
                result = ("sentences", order)
        else:
            result = ("rows", sent)
        cls._sentence_order_memo = (new_order, group, summaries, new_order._version, result)
        return result

    def _source_group(self, key: Tensor, query: Tensor) -> int:
        """beam_size if the encoder rows come in groups of beam_size copies of one source (as
        SequenceGenerator expands them), else 1. Checked, because beam_size may be stale: fairseq
        calls set_beam_size only for beams > 1, so a beam-1 search after a beam-4 one sees 4."""
        g = self.beam_size
        bsz = key.size(1)
        if g <= 1 or bsz != query.size(1) or bsz % g:
            return 1
        grouped = key.view(key.size(0), bsz // g, g, key.size(2))
        return g if bool((grouped == grouped[:, :, :1]).all()) else 1

    def set_beam_size(self, beam_size: int):
        self.beam_size = beam_size

    def upgrade_state_dict_named(self, state_dict, name):
        # old checkpoints stored q, k, v stacked as in_proj_weight: split them as fairseq does
        MultiheadAttention.upgrade_state_dict_named(self, state_dict, name)


def _split_state(Sz: Tensor):
    """[S | z] (..., F, D + 1) -> (S (..., F, D), z (..., F)), views."""
    return Sz[..., :-1], Sz[..., -1]
