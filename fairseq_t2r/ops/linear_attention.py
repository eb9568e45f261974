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
  quadratically and to earlier chunks through a running (F, D) state. Under autograd it is the
  ``ChunkedLinearAttention`` Function, whose backward recomputes the chunk states: only phi_q,
  phi_k, v and one denominator per position are kept between forward and backward.
- ``causal_fla``: the same on CUDA with flash-linear-attention's Triton kernel for the
  numerator (optional ``fla`` package) and our normaliser; ``causal_parallel`` picks it there.
- ``recurrent_step``: one token, constant time and memory; the state is (S, z).
- ``noncausal``: every query sees every key (cross-attention); reduces keys to (S, z) once.
- ``causal_reference``: step-by-step loop over ``recurrent_step``, the independent reference
  the parallel forms are tested against.

Half-precision inputs are upcast to fp32 for the sums and the normaliser (a running sum of
thousands of positive terms overflows / loses precision in fp16), and the output is cast back.
"""
import functools
import os
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

DEFAULT_EPS = 0.01  # the original T2R code clamps the denominator at 0.01
DEFAULT_CHUNK_SIZE = 64
# Up to this length the quadratic form is faster than the chunked one (fwd + bwd, 8 heads,
# k = 32, d = 64 on CPU: 1.6x faster at 64, even at 128, 2.4x slower at 256; measured by
# benchmarks/training.py --parts tune). Both are exact, so this only trades speed and memory.
QUADRATIC_MAX_LEN = 128

State = Tuple[Tensor, Tensor]  # (S: (B, H, F, D), z: (B, H, F))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def autocast_off(fn):
    """Runs ``fn`` with torch.autocast disabled on its first argument's device. These forms pick
    their own precision (sums in fp32 for half inputs); under autocast (fairseq ``--amp``) each
    matmul would be re-cast on its own and the dtypes would no longer agree."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next(a for a in args if isinstance(a, Tensor)).device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device_type=device, enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def mask_padded_keys(phi_k: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """Zero the features of padded keys. key_padding_mask: (B, S), True where padded."""
    if key_padding_mask is None:
        return phi_k
    return phi_k.masked_fill(key_padding_mask[:, None, :, None].to(torch.bool), 0.0)


@autocast_off
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


@autocast_off
def causal_chunked(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    initial_state: Optional[State] = None,
    return_state: bool = False,
):
    """Exact causal linear attention in chunks; optionally continues from / returns a state.

    With autograd (and no initial state) this runs as ``ChunkedLinearAttention``, whose backward
    recomputes the chunk states instead of keeping them: it saves only phi_q, phi_k, v and one
    denominator per position.
    """
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (phi_q, phi_k, v))
    if needs_grad:
        if initial_state is None and not return_state:
            return ChunkedLinearAttention.apply(phi_q, phi_k, v, eps, chunk_size)
        return _causal_chunked_autograd(phi_q, phi_k, v, eps, chunk_size, initial_state, return_state)
    out, _, state = _chunked_forward(phi_q, phi_k, v, eps, chunk_size, initial_state, return_state)
    return (out, state) if return_state else out


# -- the chunked form, written out (forward and backward) -------------------------------------
#
# Per (batch, head) and chunk c of C positions, with V' = [V, 1] (a ones column, so that the
# denominator comes out of the same matmuls as the numerator):
#     A_c   = tril(Q_c K_c^T)                        (C, C)
#     P_c   = P0 + sum_{c' < c} K_c'^T V'_c'           (F, D + 1)   exclusive prefix of chunk states
#     N'_c  = A_c V'_c + Q_c P_c = [num | den]
#     out_c = num / max(den, eps)
# Backward, from dout: dN' = [dout / max(den, eps) | -(dout . num) / max(den, eps)^2 * (den >= eps)],
#     dA = tril(dN' V'^T),  R_c = sum_{c' > c} Q_c'^T dN'_c'   (exclusive suffix),
#     dQ = dA K + dN' P^T,  dK = dA^T Q + V' R^T,  dV' = A^T dN' + K R.
# Heads are processed in groups (a few MB of working set each), so the transient per-chunk
# tensors never exist for all heads at once and stay in cache.

_GROUP_ROWS = 1 << 13  # positions x heads per group


def _groups(G: int, Tp: int):
    step = max(1, min(G, _GROUP_ROWS // max(Tp, 1)))
    return [(g, min(G, g + step)) for g in range(0, G, step)]


def _chunk_len(T: int, chunk_size: int) -> Tuple[int, int]:
    C = max(1, min(chunk_size, T))
    return C, T + (-T) % C


def _load(x: Tensor, g0: int, g1: int, Tp: int, ct, ones: bool = False) -> Tensor:
    """Rows g0:g1 of x (G, T, X) (any strides) as a contiguous (g, Tp, X [+1]) tensor in dtype ct,
    zero-padded to Tp positions; with ``ones`` a column of ones is appended (V' = [V, 1])."""
    g, T, X = g1 - g0, x.size(1), x.size(2)
    buf = torch.empty(g, Tp, X + ones, dtype=ct, device=x.device)
    buf[:, :T, :X].copy_(x[g0:g1])
    if Tp > T:
        buf[:, T:, :X].zero_()
    if ones:
        buf[:, :, X].fill_(1.0)
    return buf


def _flat(x: Tensor) -> Tensor:
    """(B, H, T, X) -> (B * H, T, X): a view for head-major tensors and for permuted views of
    (T, B, H, X) projections alike; a copy only for other layouts."""
    return x.reshape(x.size(0) * x.size(1), x.size(2), x.size(3))


def _empty_like_flat(x: Tensor, dtype=None) -> Tuple[Tensor, Tensor]:
    """An empty tensor shaped and laid out like x (B, H, T, X) (so that a (T, B, H, X) layout
    merges its heads back as a view), and its (B * H, T, X) view."""
    out = torch.empty_like(x, dtype=dtype)
    try:
        return out, out.view(x.size(0) * x.size(1), x.size(2), x.size(3))
    except RuntimeError:
        out = torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)
        return out, _flat(out)


def _prefix_states(kc: Tensor, vc: Tensor, g: int, n: int, S0: Optional[Tensor]):
    """kv (g, n, F, D1) per chunk and P (g, n, F, D1), the exclusive prefix (state before chunk)."""
    F, D1 = kc.size(-1), vc.size(-1)
    kv = torch.bmm(kc.transpose(1, 2), vc).view(g, n, F, D1)
    P = torch.empty_like(kv)
    P[:, 0].zero_()
    if n > 1:
        torch.cumsum(kv[:, :-1], dim=1, out=P[:, 1:])
    if S0 is not None:
        P += S0.unsqueeze(1)
    return kv, P


def _chunked_forward(phi_q, phi_k, v, eps, chunk_size, initial_state=None, return_state=False, out=None):
    """(out, den (B, H, T) before the clamp, final state or None); no autograd. ``out``: a given
    (B, H, T, D) buffer whose (B, H) dims merge as a view (e.g. a permuted (T, B, H, D) tensor)."""
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    ct = compute_dtype(v.dtype)
    C, Tp = _chunk_len(T, chunk_size)
    n = Tp // C
    G = B * H
    q3, k3, v3 = _flat(phi_q), _flat(phi_k), _flat(v)
    if out is None:
        out, out3 = _empty_like_flat(v)
    else:
        out3 = out.view(G, T, D)
    den = torch.empty(B, H, T, dtype=ct, device=v.device)
    den3 = den.view(G, T)
    S0 = None
    if initial_state is not None:
        S0 = torch.cat([initial_state[0].to(ct), initial_state[1].to(ct).unsqueeze(-1)], -1).reshape(G, F, D + 1)
    finals = []
    for g0, g1 in _groups(G, Tp):
        g = g1 - g0
        qc = _load(q3, g0, g1, Tp, ct).view(g * n, C, F)
        kc = _load(k3, g0, g1, Tp, ct).view(g * n, C, F)
        vc = _load(v3, g0, g1, Tp, ct, ones=True).view(g * n, C, D + 1)
        kv, P = _prefix_states(kc, vc, g, n, None if S0 is None else S0[g0:g1])
        if return_state:
            finals.append(P[:, -1] + kv[:, -1])
        del kv
        A = torch.bmm(qc, kc.transpose(1, 2)).tril_()
        N = torch.bmm(A, vc)
        del A
        N.baddbmm_(qc, P.view(g * n, F, D + 1))
        N = N.view(g, Tp, D + 1)[:, :T]
        den3[g0:g1] = N[..., D]
        torch.div(N[..., :D], N[..., D:].clamp(min=eps), out=out3[g0:g1])
    state = None
    if return_state:
        Sz = torch.cat(finals, 0).view(B, H, F, D + 1)
        state = (Sz[..., :D], Sz[..., D])
    return out, den, state


def _chunked_backward(phi_q, phi_k, v, den, dout, eps, chunk_size, into=None, relu=False):
    """(dq, dk, dv). ``into``: three (B, H, T, X) tensors to write them to (they may be phi_q,
    phi_k and v themselves: a group's inputs are loaded before its gradients are written, and
    groups are disjoint). ``relu``: phi_q/phi_k are relu outputs and the gradients returned for
    them are those of the pre-activations (times 1[phi > 0], as torch's relu backward)."""
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    ct = den.dtype
    C, Tp = _chunk_len(T, chunk_size)
    n = Tp // C
    G = B * H
    q3, k3, v3, do3 = _flat(phi_q), _flat(phi_k), _flat(v), _flat(dout)
    den3 = den.view(G, T)
    if into is None:
        (dq, dq3), (dk, dk3), (dv, dv3) = _empty_like_flat(phi_q), _empty_like_flat(phi_k), _empty_like_flat(v)
    else:
        (dq, dk, dv), (dq3, dk3, dv3) = into, (_flat(t) for t in into)
    for g0, g1 in _groups(G, Tp):
        g = g1 - g0
        qc = _load(q3, g0, g1, Tp, ct).view(g * n, C, F)
        kc = _load(k3, g0, g1, Tp, ct).view(g * n, C, F)
        vc = _load(v3, g0, g1, Tp, ct, ones=True).view(g * n, C, D + 1)
        raw = den3[g0:g1]  # (g, T), before the clamp
        dmax = raw.clamp(min=eps)
        _, P = _prefix_states(kc, vc, g, n, None)
        P = P.view(g * n, F, D + 1)
        A = torch.bmm(qc, kc.transpose(1, 2)).tril_()
        # the output is recomputed rather than kept from the forward (one tensor of the
        # sequence's size less held between forward and backward)
        num = torch.bmm(A, vc).baddbmm_(qc, P).view(g, Tp, D + 1)[:, :T, :D]
        do = do3[g0:g1].to(ct)
        dN = torch.empty(g, Tp, D + 1, dtype=ct, device=v.device)
        if Tp > T:
            dN[:, T:].zero_()
        torch.div(do, dmax.unsqueeze(-1), out=dN[:, :T, :D])
        # d/d den of num / max(den, eps): -(dout . out) / max(den, eps) where den >= eps (as clamp)
        dot = torch.linalg.vecdot(do, num)
        dN[:, :T, D] = dot.div_(dmax).div_(dmax).neg_().masked_fill_(raw < eps, 0.0)
        del do, dot, num
        dN = dN.view(g * n, C, D + 1)
        dP = torch.bmm(qc.transpose(1, 2), dN).view(g, n, F, D + 1)
        R = torch.empty_like(dP)  # exclusive suffix sums of dP over chunks
        R[:, -1].zero_()
        if n > 1:
            R[:, :-1] = dP[:, 1:].flip(1).cumsum(1).flip(1)
        del dP
        R = R.view(g * n, F, D + 1)
        dA = torch.bmm(dN, vc.transpose(1, 2)).tril_()
        gq = torch.bmm(dA, kc).baddbmm_(dN, P.transpose(1, 2))
        del P
        gk = torch.bmm(dA.transpose(1, 2), qc).baddbmm_(vc, R.transpose(1, 2))
        del dA
        gv = torch.bmm(A.transpose(1, 2), dN).baddbmm_(kc, R)
        del A
        if relu:
            gq.masked_fill_(qc <= 0, 0.0)
            gk.masked_fill_(kc <= 0, 0.0)
        dq3[g0:g1] = gq.view(g, Tp, F)[:, :T]
        dk3[g0:g1] = gk.view(g, Tp, F)[:, :T]
        dv3[g0:g1] = gv.view(g, Tp, D + 1)[:, :T, :D]
    return dq, dk, dv


class ChunkedLinearAttention(torch.autograd.Function):
    """Causal linear attention in chunks with a hand-written backward that recomputes the chunk
    states and the numerator (see the comment above): it keeps only phi_q, phi_k, v and one
    denominator per position between forward and backward."""

    @staticmethod
    def forward(ctx, phi_q, phi_k, v, eps, chunk_size):
        out, den, _ = _chunked_forward(phi_q, phi_k, v, eps, chunk_size)
        ctx.save_for_backward(phi_q, phi_k, v, den)
        ctx.eps, ctx.chunk_size = eps, chunk_size
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        phi_q, phi_k, v, den = ctx.saved_tensors
        dq, dk, dv = _chunked_backward(phi_q, phi_k, v, den, dout, ctx.eps, ctx.chunk_size)
        return dq, dk, dv, None, None


@autocast_off
def causal_relu_from_input(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    num_heads: int,
    feature_dim: int,
    key_padding_mask: Optional[Tensor] = None,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Causal self-attention with relu features, straight from the layer input, for training.

    x (T, B, C); ``weight`` (H * (2F + D), C) and ``bias`` stack per head h the rows of
    [query pre-features | key pre-features | values]; phi = relu of the first two blocks.
    Returns (T, B, H * D), the heads side by side (what out_proj takes).

    The same as projecting, applying relu, masking padded keys and ``causal_chunked``, with the
    memory of one projection: the projection output holds phi and v in place, and the backward
    writes the gradients of the projection output back into that same tensor before the input
    and weight gradients are taken from it (``ProjectedReluLinearAttention``).
    """
    return ProjectedReluLinearAttention.apply(x, weight, bias, key_padding_mask, num_heads, feature_dim, eps, chunk_size)


class ProjectedReluLinearAttention(torch.autograd.Function):
    """See ``causal_relu_from_input``. Kept between forward and backward: the projection output
    y = [relu(q) | relu(k) | v] per head (as an attribute, so that it can be freed, and its
    storage reused for dy, inside the backward) and one denominator per position."""

    @staticmethod
    def forward(ctx, x, weight, bias, key_padding_mask, H, F, eps, chunk_size):
        T, B, C = x.shape
        W = weight.size(0) // H
        D = W - 2 * F
        x2 = x.reshape(T * B, C)
        y = torch.mm(x2, weight.t()) if bias is None else torch.addmm(bias, x2, weight.t())
        y4 = y.view(T, B, H, W)
        y4[..., : 2 * F].relu_()
        if key_padding_mask is not None:
            y4[..., F : 2 * F].masked_fill_(key_padding_mask.t().to(torch.bool)[:, :, None, None], 0.0)
        phi_q, phi_k, v = _projected_heads(y4, F)
        out = y.new_empty(T, B, H, D)
        _, den, _ = _chunked_forward(phi_q, phi_k, v, eps, chunk_size, out=out.permute(1, 2, 0, 3))
        ctx.save_for_backward(x, weight)
        ctx.y, ctx.den = y4, den
        ctx.has_bias, ctx.F, ctx.eps, ctx.chunk_size = bias is not None, F, eps, chunk_size
        return out.view(T, B, H * D)

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        x, weight = ctx.saved_tensors
        y4, den = ctx.y, ctx.den
        if y4 is None:
            raise RuntimeError(
                "causal_relu_from_input: a second backward through the same forward (retain_graph); its "
                "backward overwrites the saved activations with their gradients: run the forward again"
            )
        ctx.y = ctx.den = None  # y's storage becomes dy: nothing else may hold it
        T, B, H, W = y4.shape
        heads = _projected_heads(y4, ctx.F)
        dout4 = dout.reshape(T, B, H, W - 2 * ctx.F).permute(1, 2, 0, 3)
        _chunked_backward(*heads, den, dout4, ctx.eps, ctx.chunk_size, into=heads, relu=True)
        del heads, den
        dy = y4.view(T * B, H * W)
        dx = dW = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.mm(dy, weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            dW = torch.mm(dy.t(), x.reshape(T * B, -1))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0)
        return dx, dW, db, None, None, None, None, None


def _projected_heads(y4: Tensor, F: int):
    """(T, B, H, 2F + D) -> phi_q, phi_k, v as (B, H, T, X) views."""
    heads = y4.permute(1, 2, 0, 3)
    return heads[..., :F], heads[..., F : 2 * F], heads[..., 2 * F :]


def _causal_chunked_autograd(phi_q, phi_k, v, eps, chunk_size, initial_state, return_state):
    """Plain differentiable chunked form (autograd keeps every intermediate); used only when
    gradients must flow through a given initial state or a returned state."""
    out_dtype = v.dtype
    ct = compute_dtype(out_dtype)
    phi_q, phi_k, v = phi_q.to(ct), phi_k.to(ct), v.to(ct)
    B, H, T, F = phi_q.shape
    D = v.size(-1)
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:
        phi_q = torch.nn.functional.pad(phi_q, (0, 0, 0, pad))
        phi_k = torch.nn.functional.pad(phi_k, (0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    n = (T + pad) // C
    q = phi_q.reshape(B, H, n, C, F)
    k = phi_k.reshape(B, H, n, C, F)
    vc = v.reshape(B, H, n, C, D)
    kv = torch.matmul(k.transpose(-1, -2), vc)
    ksum = k.sum(-2)
    S_incl = kv.cumsum(2)
    z_incl = ksum.cumsum(2)
    if initial_state is not None:
        S0, z0 = initial_state
        S_incl = S_incl + S0.to(ct).unsqueeze(2)
        z_incl = z_incl + z0.to(ct).unsqueeze(2)
    S_prev = S_incl - kv
    z_prev = z_incl - ksum
    intra = torch.matmul(q, k.transpose(-1, -2))
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril_()
    intra = intra.masked_fill(~causal, 0.0)
    num = torch.matmul(intra, vc) + torch.matmul(q, S_prev)
    den = intra.sum(-1) + torch.matmul(q, z_prev.unsqueeze(-1)).squeeze(-1)
    out = num / den.clamp(min=eps).unsqueeze(-1)
    out = out.reshape(B, H, n * C, D)[:, :, :T].to(out_dtype)
    if return_state:
        return out, (S_incl[:, :, -1], z_incl[:, :, -1])
    return out


@autocast_off
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
    On CUDA, long sequences go through flash-linear-attention's chunked kernel when the optional
    ``fla`` package is importable (``pip install .[gpu]``) and ``FAIRSEQ_T2R_FLA=1`` is set.
    """
    form = parallel_form(phi_q.size(-2), phi_q.is_cuda, weight_dropout is not None, quadratic_max_len)
    if form == "quadratic":
        return causal_quadratic(phi_q, phi_k, v, eps, weight_dropout)
    if form == "fla":
        return causal_fla(phi_q, phi_k, v, eps)
    return causal_chunked(phi_q, phi_k, v, eps, chunk_size)


def parallel_form(length: int, is_cuda: bool, weight_dropout: bool, quadratic_max_len: int = QUADRATIC_MAX_LEN) -> str:
    """Which exact form ``causal_parallel`` runs: "quadratic", "fla" or "chunked"."""
    if weight_dropout or length <= quadratic_max_len:
        return "quadratic"
    if is_cuda and USE_FLA and fla_kernel() is not None:
        return "fla"
    return "chunked"


# -- optional GPU kernel: flash-linear-attention -----------------------------------------------
# Opt-in (FAIRSEQ_T2R_FLA=1): on an H100 with fla 0.6.0 / Triton 3.6 / torch 2.11, fla's backward
# kernel (chunk_bwd_kernel_dqkwg) hit an illegal memory access, and its fp32 matmuls run in TF32
# (parallel vs recurrent differ by ~3e-3 instead of ~1e-6): see benchmarks/gpu_check.py
USE_FLA = os.environ.get("FAIRSEQ_T2R_FLA", "0") == "1"
_FLA_KERNEL = None  # None: not looked up yet; False: not available


def fla_kernel():
    """fla's ``chunk_linear_attn`` (imported on first use), or None when fla is not installed."""
    global _FLA_KERNEL
    if _FLA_KERNEL is None:
        try:
            import inspect

            from fla.ops.linear_attn import chunk_linear_attn

            extra = {}
            if "head_first" in inspect.signature(chunk_linear_attn).parameters:
                extra["head_first"] = False  # old releases defaulted to (B, H, T, K)
            _FLA_KERNEL = (chunk_linear_attn, extra)
        except Exception:  # not installed, or no Triton/CUDA: the PyTorch forms serve
            _FLA_KERNEL = False
    return _FLA_KERNEL or None


@autocast_off
def causal_fla(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """The chunked form with fla's Triton kernel for the numerator phi_q . S_i (unnormalised,
    scale 1: ``normalize=False``; fla's own normaliser adds 1e-10 instead of clamping at eps);
    the denominator max(phi_q . z_i, eps) is ours, in fp32 as everywhere else."""
    kernel, extra = fla_kernel()
    q, k, vv = (t.transpose(1, 2).contiguous() for t in (phi_q, phi_k, v))  # (B, T, H, X)
    num, _ = kernel(q, k, vv, scale=1.0, normalize=False, **extra)
    ct = compute_dtype(v.dtype)
    den = (q.to(ct) * k.to(ct).cumsum(1)).sum(-1, keepdim=True)
    out = (num.to(ct) / den.clamp(min=eps)).to(v.dtype)
    return out.transpose(1, 2)


def empty_state(phi_k: Tensor, v: Tensor) -> State:
    B, H, _, F = phi_k.shape
    ct = compute_dtype(v.dtype)
    return (
        v.new_zeros(B, H, F, v.size(-1), dtype=ct),
        v.new_zeros(B, H, F, dtype=ct),
    )


@autocast_off
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


@autocast_off
def summarize_keys(phi_k: Tensor, v: Tensor) -> State:
    """(S, z) over all keys: what a query sees in non-causal (cross) attention."""
    ct = compute_dtype(v.dtype)
    k, vv = phi_k.to(ct), v.to(ct)
    return torch.matmul(k.transpose(-1, -2), vv), k.sum(-2)


@autocast_off
def attend_state(phi_q: Tensor, state: State, eps: float = DEFAULT_EPS, out_dtype=None) -> Tensor:
    """Queries against a fixed key summary: (phi_q . S) / max(phi_q . z, eps)."""
    S, z = state
    q = phi_q.to(S.dtype)
    num = torch.matmul(q, S)
    den = torch.matmul(q, z.unsqueeze(-1))
    return (num / den.clamp(min=eps)).to(out_dtype or phi_q.dtype)


@autocast_off
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
