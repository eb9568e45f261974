"""Linear attention as pure tensor functions (no parameters, no fairseq).

All functions take feature-mapped queries and keys, i.e. phi(q) and phi(k), laid out
head-major: ``phi_q`` (B, H, T, F), ``phi_k`` (B, H, S, F), ``v`` (B, H, S, D).
Padded keys must already be zeroed in ``phi_k`` (``mask_padded_keys``): a zero feature
vector adds nothing to the sums, so padding needs no other special case anywhere.

Normalised attention for query i is

    out_i = (phi_q_i . S_i) / max(phi_q_i . z_i, eps)

with S_i = sum_j phi_k_j v_j^T and z_i = sum_j phi_k_j over the keys query i may see
(j <= i for causal attention, all j otherwise).

Forms, all exact and interchangeable:
- ``causal_quadratic``: builds the (T, T) weight matrix; fastest for short sequences and the
  only form that can apply fairseq-style dropout to attention weights.
- ``causal_chunked``: O(T * C) work, memory linear in T; chunks of size C attend to each other
  quadratically and to earlier chunks through a running (F, D) state.
- ``recurrent_step``: one token, constant time and memory; the state is (S, z).
- ``noncausal``: every query sees every key (cross-attention); reduces keys to (S, z) once.
- ``causal_reference``: step-by-step loop over ``recurrent_step``, the independent reference
  the parallel forms are tested against.

Half-precision inputs are upcast to fp32 for the sums and the normaliser (a running sum of
thousands of positive terms overflows / loses precision in fp16), and the output is cast back.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

DEFAULT_EPS = 0.01  # the original T2R code clamps the denominator at 0.01
DEFAULT_CHUNK_SIZE = 64
# Below this length the quadratic form is faster than the chunked one on CPU and GPU alike
# (see benchmarks/); both are exact, so this only trades speed for memory.
QUADRATIC_MAX_LEN = 512

State = Tuple[Tensor, Tensor]  # (S: (B, H, F, D), z: (B, H, F))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def mask_padded_keys(phi_k: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """Zero the features of padded keys. key_padding_mask: (B, S), True where padded."""
    if key_padding_mask is None:
        return phi_k
    return phi_k.masked_fill(key_padding_mask[:, None, :, None].to(torch.bool), 0.0)


def causal_quadratic(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    weight_dropout: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    out_dtype = v.dtype
    ct = compute_dtype(out_dtype)
    phi_q, phi_k, v = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    T = phi_q.size(-2)
    weights = torch.matmul(phi_q, phi_k.transpose(-1, -2))
    causal = torch.ones(T, T, dtype=torch.bool, device=weights.device).tril_()
    weights = weights.masked_fill(~causal, 0.0)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=eps)
    if weight_dropout is not None:
        weights = weight_dropout(weights)
    return torch.matmul(weights, v).to(out_dtype)


def causal_chunked(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    initial_state: Optional[State] = None,
    return_state: bool = False,
):
    """Exact causal linear attention in chunks; optionally continues from / returns a state."""
    out_dtype = v.dtype
    ct = compute_dtype(out_dtype)
    phi_q, phi_k, v = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:
        # zero keys/values contribute nothing; the padded query rows are cut off below
        phi_q = torch.nn.functional.pad(phi_q, (0, 0, 0, pad))
        phi_k = torch.nn.functional.pad(phi_k, (0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    n = (T + pad) // C
    q = phi_q.reshape(B, H, n, C, F)
    k = phi_k.reshape(B, H, n, C, F)
    vc = v.reshape(B, H, n, C, D)

    # state before each chunk: exclusive prefix sum over chunks of K_c^T V_c and of K_c
    kv = torch.matmul(k.transpose(-1, -2), vc)  # (B, H, n, F, D)
    ksum = k.sum(-2)  # (B, H, n, F)
    S_incl = kv.cumsum(2)
    z_incl = ksum.cumsum(2)
    if initial_state is not None:
        S0, z0 = initial_state
        S_incl = S_incl + S0.to(ct).unsqueeze(2)
        z_incl = z_incl + z0.to(ct).unsqueeze(2)
    S_prev = S_incl - kv
    z_prev = z_incl - ksum

    intra = torch.matmul(q, k.transpose(-1, -2))  # (B, H, n, C, C)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril_()
    intra = intra.masked_fill(~causal, 0.0)
    num = torch.matmul(intra, vc) + torch.matmul(q, S_prev)
    den = intra.sum(-1) + torch.matmul(q, z_prev.unsqueeze(-1)).squeeze(-1)
    out = num / den.clamp(min=eps).unsqueeze(-1)
    out = out.reshape(B, H, n * C, D)[:, :, :T].to(out_dtype)
    if return_state:
        return out, (S_incl[:, :, -1], z_incl[:, :, -1])
    return out


def causal_parallel(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    weight_dropout: Optional[Callable[[Tensor], Tensor]] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    quadratic_max_len: int = QUADRATIC_MAX_LEN,
) -> Tensor:
    """Training form: picks the faster exact algorithm for the length.

    Dropout on attention weights needs the weights themselves, so it forces the quadratic form.
    """
    if weight_dropout is not None or phi_q.size(-2) <= quadratic_max_len:
        return causal_quadratic(phi_q, phi_k, v, eps, weight_dropout)
    return causal_chunked(phi_q, phi_k, v, eps, chunk_size)


def empty_state(phi_k: Tensor, v: Tensor) -> State:
    B, H, _, F = phi_k.shape
    ct = compute_dtype(v.dtype)
    return (
        v.new_zeros(B, H, F, v.size(-1), dtype=ct),
        v.new_zeros(B, H, F, dtype=ct),
    )


def recurrent_step(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, state: State, eps: float = DEFAULT_EPS
) -> Tuple[Tensor, State]:
    """One token: phi_q/phi_k (B, H, 1, F), v (B, H, 1, D). Returns out (B, H, 1, D), new state."""
    S, z = state
    ct = S.dtype
    q, k, vv = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    S = S + k.transpose(-1, -2) * vv  # (B,H,F,1)*(B,H,1,D): outer product
    z = z + k.squeeze(-2)
    return attend_state(q, (S, z), eps, out_dtype=v.dtype), (S, z)


def causal_reference(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS
) -> Tensor:
    """Token-by-token recurrence; slow, obviously correct, used as the test reference."""
    state = empty_state(phi_k, v)
    outs = []
    for t in range(phi_q.size(-2)):
        sl = slice(t, t + 1)
        o, state = recurrent_step(phi_q[:, :, sl], phi_k[:, :, sl], v[:, :, sl], state, eps)
        outs.append(o)
    return torch.cat(outs, dim=-2)


def summarize_keys(phi_k: Tensor, v: Tensor) -> State:
    """(S, z) over all keys: what a query sees in non-causal (cross) attention."""
    ct = compute_dtype(v.dtype)
    k, vv = phi_k.to(ct), v.to(ct)
    return torch.matmul(k.transpose(-1, -2), vv), k.sum(-2)


def attend_state(phi_q: Tensor, state: State, eps: float = DEFAULT_EPS, out_dtype=None) -> Tensor:
    """Queries against a fixed key summary: (phi_q . S) / max(phi_q . z, eps)."""
    S, z = state
    q = phi_q.to(S.dtype)
    num = torch.matmul(q, S)
    den = torch.matmul(q, z.unsqueeze(-1))
    return (num / den.clamp(min=eps)).to(out_dtype or phi_q.dtype)


def noncausal(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    weight_dropout: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    """Every query sees every (non-padded) key. Linear in both lengths unless dropout is on."""
    if weight_dropout is None:
        return attend_state(phi_q, summarize_keys(phi_k, v), eps, out_dtype=v.dtype)
    ct = compute_dtype(v.dtype)
    weights = torch.matmul(phi_q.to(ct), phi_k.to(ct).transpose(-1, -2))
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=eps)
    return torch.matmul(weight_dropout(weights), v.to(ct)).to(v.dtype)
