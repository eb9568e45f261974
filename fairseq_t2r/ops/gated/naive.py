"""The gated state token by token: slow and independent of the chunked forms, what the tests
check every gated form (decay, gate per head or per feature) against."""
import torch
from torch import Tensor

from ..common import DEFAULT_EPS, autocast_off, compute_dtype


@autocast_off
def causal_gated_reference(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, log_g, *, eps: float = DEFAULT_EPS, normalize: bool = True
) -> Tensor:
    """Gated (decayed) causal linear attention token by token. log_g: log-gates (B, H, T) per head
    or (B, H, T, F) per feature, or None (g = 1). out_i = (phi_q_i . S_i) / max(phi_q_i . z_i, eps)
    (just phi_q_i . S_i without ``normalize``) with S_i = diag(g_i) S_{i-1} + phi_k_i v_i^T,
    z_i = diag(g_i) z_{i-1} + phi_k_i. -> (B, H, T, D) in v's dtype."""
    B, H, T, F = phi_k.shape
    ct = compute_dtype(v.dtype)
    S = v.new_zeros(B, H, F, v.size(-1), dtype=ct)
    z = v.new_zeros(B, H, F, dtype=ct)
    outs = []
    for t in range(T):
        q, k, vv = (x[:, :, t].to(ct) for x in (phi_q, phi_k, v))  # (B, H, F), (B, H, F), (B, H, D)
        if log_g is not None:
            g = torch.exp(log_g[:, :, t].to(ct))
            g = g if g.dim() == 3 else g.unsqueeze(-1)  # (B, H, F) or (B, H, 1)
            S = S * g.unsqueeze(-1)
            z = z * g
        S = S + k.unsqueeze(-1) * vv.unsqueeze(-2)
        z = z + k
        num = (q.unsqueeze(-1) * S).sum(-2)  # (B, H, D)
        if normalize:
            num = num / (q * z).sum(-1, keepdim=True).clamp(min=eps)
        outs.append(num.unsqueeze(2).to(v.dtype))
    return torch.cat(outs, dim=2)
