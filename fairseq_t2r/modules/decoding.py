"""Incremental decoding of T2RAttention: the recurrent state in fairseq's incremental state.

Incremental state (batch-major, so beam search reorders it with index_select on dim 0):
- causal self-attention: one tensor under the state update's ``state_key``, laid out by its class
  (``states/``): ``Sz`` (B, H, F, D + 1) = [S | z] for the running sums (additive, decayed,
  gated: S (F, D) and z (F) side by side, so that one matmul with phi(q) gives numerator and
  denominator), ``S`` (B, H, F, D) for the delta rules; its size never depends on how many
  tokens were consumed; a padded token leaves it as it is.
- cross-attention: ``Sz_src`` (same layout), the source summary, computed once at the first step
  and reused; one per sentence rather than per hypothesis when ``set_beam_size`` was called
  (``src_group`` rows read each summary, see ``beam_groups.py``).

Inference (eval mode, no autograd) decodes one token with one projection (``FoldedProjections.step``:
feature pre-activations and values with a ones column appended per head, in a single matmul), one
in-place state update and one matmul against the state. Otherwise (several tokens, e.g. a prompt,
or autograd on) the parallel forms continue the state.
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .. import ops
from . import beam_groups

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


class IncrementalDecoding:
    """Mixin of T2RAttention: every call with an incremental state, and the fairseq protocol
    (``reorder_incremental_state``, ``set_beam_size``)."""

    def _decode(self, query, key, value, key_padding_mask, incremental_state: IncrementalState) -> Tensor:
        """query (T, B, C) -> output (T, B, C), updating the state."""
        if self.windowed and not self.encoder_decoder_attention:
            return self._window_tokens(query, key, value, key_padding_mask, incremental_state)
        if query.size(0) == 1 and not self.training and not torch.is_grad_enabled():
            if self.encoder_decoder_attention:
                return self._cross_attention_step(query, key, value, key_padding_mask, incremental_state)
            return self._self_attention_step(query, key, value, key_padding_mask, incremental_state)
        if self.encoder_decoder_attention:
            out = self._cross_attention_continued(query, key, value, key_padding_mask, incremental_state)
        else:
            out = self._self_attention_continued(query, key, value, key_padding_mask, incremental_state)
        return self.out_proj(self._unheads(out))

    # -- one token at inference ---------------------------------------------------------------
    def _self_attention_step(self, query, key, value, key_padding_mask, incremental_state):
        """One token through the folded step projection, one in-place state update, one read-out:
        written for few tensor operations, since it runs once per layer and generated token."""
        if key is not query or value is not query:  # not how fairseq calls it: the plain path
            out = self._self_attention_continued(query, key, value, key_padding_mask, incremental_state)
            return self.out_proj(self._unheads(out))
        weight, bias = self.folded.step()
        H, D = self.num_heads, self.head_dim
        x = query[0]
        B = x.size(0)
        y = torch.addmm(bias, x, weight.t())
        nqk = y.size(1) - H * (D + 1)
        qk = y[:, :nqk].view(B, H, 2, -1)
        fm = self.feature_map
        if self.folded.active and not self.windowed:
            phi = fm.activate(qk)
            phi_q, phi_k = phi[:, :, :1], phi[:, :, 1]  # (B, H, 1, F), (B, H, F)
        elif self.windowed and self.window.branch == "window":  # the window alone reads no features
            phi_q = phi_k = qk[:, :, 1]
        elif self.windowed and fm.linear_part() is not None:  # act(W_h q + b_h): one batched matmul per head
            w, b = fm.linear_part()
            pre = torch.bmm(qk.permute(1, 0, 2, 3).reshape(H, B * 2, D), w.transpose(1, 2))  # (H, 2B, F')
            if b is not None:
                pre += b[:, None, :]
            phi = fm.activate(pre, inplace=True).view(H, B, 2, -1).permute(1, 0, 2, 3)  # (B, H, 2, F)
            phi_q, phi_k = phi[:, :, :1], phi[:, :, 1]
        else:
            phi_q, phi_k = fm.forward_queries(qk[:, :, :1]), fm.forward_keys(qk[:, :, 1:]).squeeze(2)
        v1 = y[:, nqk:].view(B, H, 1, D + 1)
        su = self.state_update
        kpm = None
        if key_padding_mask is not None:
            kpm = key_padding_mask[:, -1:]
            phi_k = phi_k.masked_fill(kpm.to(torch.bool).view(B, 1, 1), 0.0)
        buf = self._get_input_buffer(incremental_state)
        if self.windowed:  # the ring buffer and the linear state, in buf (window.py)
            first = not buf
            out = self.window.step(self, x, qk[:, :, 0], qk[:, :, 1], phi_q, phi_k, v1, kpm, buf)
            if first:
                self._set_input_buffer(incremental_state, buf)
            return self._out_proj_step(out, B)
        state = buf.get(su.state_key)
        out, new_state = su.step(phi_q, phi_k, v1, su.token_inputs(query, self.k_proj, kpm), state, self.eps,
                                 query.dtype)
        if new_state is not state:  # the first token: the state is made by the step, else updated in place
            buf[su.state_key] = new_state
            self._set_input_buffer(incremental_state, buf)
        return self._out_proj_step(out, B)

    def _window_tokens(self, query, key, value, key_padding_mask, incremental_state):
        """A windowed layer decodes token by token, several tokens (a prompt) included: its ring
        buffer is written in place, which needs no autograd (inference). Self-attention: key and
        value are the query (fairseq passes the same tensor; callers may pass equal slices)."""
        T = query.size(0)
        outs = []
        for i in range(T):
            kpm = None if key_padding_mask is None else \
                key_padding_mask[:, key_padding_mask.size(1) - T + i: key_padding_mask.size(1) - T + i + 1]
            q = query[i : i + 1]
            outs.append(self._self_attention_step(q, q, q, kpm, incremental_state))
        return torch.cat(outs, 0)

    def _cross_attention_step(self, query, key, value, key_padding_mask, incremental_state):
        Sz = self._source_summary(key, value, key_padding_mask, query, incremental_state)
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

    def _read_state(self, phi_q: Tensor, Sz: Tensor, dtype, normalize: bool = True) -> Tensor:
        """phi_q (N, R, F) against Sz (N, F, D + 1): (N, R, D) = num / max(den, eps) (num alone
        without ``normalize``)."""
        if phi_q.dtype != Sz.dtype:
            phi_q = phi_q.to(Sz.dtype)
        nd = torch.bmm(phi_q, Sz)
        out = nd[..., :-1] / nd[..., -1:].clamp_(min=self.eps) if normalize else nd[..., :-1]
        return out if out.dtype == dtype else out.to(dtype)

    def _out_proj_step(self, out: Tensor, B: int) -> Tensor:
        # the module's own weights without nn.Module's call machinery (this runs per layer and token)
        proj = self.out_proj
        return nn.functional.linear(out.reshape(B, self.embed_dim), proj.weight, proj.bias).unsqueeze(0)

    # -- several tokens, or autograd on: the parallel forms continuing the state ----------------
    def _self_attention_continued(self, query, key, value, key_padding_mask, incremental_state):
        phi_q, phi_k = self._phi_queries_keys(query, key, key_padding_mask)
        v = self._heads(self.v_proj(value))
        su = self.state_update
        buf = self._get_input_buffer(incremental_state)
        out, buf[su.state_key] = su.parallel(phi_q, phi_k, v, query, self.k_proj, key_padding_mask, self.eps,
                                             initial_state=buf.get(su.state_key), return_state=True)
        self._set_input_buffer(incremental_state, buf)
        return out

    def _cross_attention_continued(self, query, key, value, key_padding_mask, incremental_state):
        phi_q = self._phi_queries(query)
        S, z = ops.split_state(self._source_summary(key, value, key_padding_mask, query, incremental_state))
        nsent = S.size(0)
        if nsent == phi_q.size(0):
            return ops.attend_state(phi_q, (S, z), self.eps, out_dtype=query.dtype)
        # one summary per sentence, beam_size queries per sentence
        B, H, T, Fdim = phi_q.shape
        q = phi_q.view(nsent, -1, H, T, Fdim)
        out = ops.attend_state(q, (S.unsqueeze(1), z.unsqueeze(1)), self.eps, out_dtype=query.dtype)
        return out.reshape(B, H, T, -1)

    def _source_summary(self, key, value, key_padding_mask, query, incremental_state) -> Tensor:
        """``Sz_src``: made at the first call, one per sentence when the rows come in beam groups."""
        buf = self._get_input_buffer(incremental_state)
        if "Sz_src" not in buf:
            group = beam_groups.source_group(self.beam_size, key, query)
            if group > 1:  # every beam of a sentence has the same source: summarise one copy
                key, value, key_padding_mask = beam_groups.one_per_sentence(key, value, key_padding_mask, group)
            phi_k = self._phi_keys(key, key_padding_mask)
            buf["Sz_src"] = ops.join_state(*ops.summarize_keys(phi_k, self._heads(self.v_proj(value))))
            buf["src_group"] = torch.tensor(group)  # rows (hypotheses) per summary
            self._set_input_buffer(incremental_state, buf)
        return buf["Sz_src"]

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
            kind, order = beam_groups.follow_reorder(incremental_state, new_order, group, buf["Sz_src"].size(0))
            if kind == "keep":
                return incremental_state  # beams only moved within their sentence
            if kind == "rows":  # rows no longer come in whole sentences: one summary per row from now on
                buf["src_group"] = torch.tensor(1)
        for k, v in buf.items():
            if v is not None and k != "src_group":
                buf[k] = v.index_select(0, order)
        return self._set_input_buffer(incremental_state, buf)

    def set_beam_size(self, beam_size: int):
        self.beam_size = beam_size
