"""The additive state (T2R, the paper): S_i = S_{i-1} + phi(k_i) v_i^T, z likewise; no new tensor
with the sum normaliser (the paper's models and checkpoints), ``norm_weight`` with ``rms``."""
from ... import ops
from .base import RunningSums, register_state_update


@register_state_update("additive")
class AdditiveState(RunningSums):
    order = 0

    @property
    def is_paper(self) -> bool:
        return self.norm == "sum"

    def parallel_form(self, phi_q, phi_k, v, log_g, eps, initial_state, return_state, normalize, weight_dropout):
        if not (self.is_paper and normalize):  # the RMS norm: the gated forms with g = 1
            return super().parallel_form(phi_q, phi_k, v, None, eps, initial_state, return_state, normalize, None)
        if initial_state is None and not return_state:  # training: quadratic / chunked / kernels by length
            return ops.causal_parallel(phi_q, phi_k, v, eps, weight_dropout)
        state = ops.empty_state(phi_k, v) if initial_state is None else ops.split_state(initial_state)
        if phi_q.size(2) == 1:
            out, (S, z) = ops.recurrent_step(phi_q, phi_k, v, state=state, eps=eps)
        else:  # several tokens at once (e.g. a prompt): the chunked form continuing the state
            out, (S, z) = ops.causal_chunked(phi_q, phi_k, v, eps, initial_state=state, return_state=True)
        return out, ops.join_state(S, z)

    def attention_weights(self, phi_q, phi_k, x, k_proj, key_padding_mask, eps):
        if not self.is_paper:
            return super().attention_weights(phi_q, phi_k, x, k_proj, key_padding_mask, eps)
        return ops.linear_attention_weights(phi_q, phi_k, True, eps)
