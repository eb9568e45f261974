"""Optional GPU form: causal normalised linear attention as fused Triton kernels (needs the
``triton`` package, ``pip install .[gpu]``; imported only when selected, never on CPU use).

The chunked design of ``chunked_passes`` (see there for the algebra), one program per
(chunk, batch x head), with the ones column of V' = [V, 1] kept as separate fp32 vectors:
    forward   _state_kernel: per chunk K_c^T V_c (F, D) and sum K_c (F)  -> exclusive prefix
              (torch cumsum over chunks: P_c, zP_c, fp32)
              _out_kernel:   A = tril(Q K^T), num = A V + Q P, den = rowsum A + Q . zP,
              out = num / max(den, eps)   (den in fp32, the clamp in the epilogue)
    backward  _state_kernel again (P recomputed, not kept), then
              _dstate_kernel: dden, per chunk Q^T dnum and Q^T dden -> exclusive suffix (R, Rz)
              _grad_kernel:   dq, dk, dv
With ``relu=True`` the kernels take the pre-activations and apply relu on load (T2R's feature
map; the gradients returned are those of the pre-activations). Matmul operands are in the input
dtype with fp32 accumulation (fp32 inputs: IEEE, no TF32); states, z and den are fp32.
Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (tests only).
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, autocast_off

# triton.jit picks the interpreter when a kernel is defined (and triton's own library functions
# when triton is first imported), so this module's kernels run on CPU tensors exactly when the
# process started under TRITON_INTERPRET=1
INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _tile(ptr, bh, c, T, X, C: tl.constexpr, BX: tl.constexpr):
    """Rows c*C .. c*C+C of the (T, X) matrix bh of a contiguous (BH, T, X) tensor, as (C, BX),
    zero past T and past X."""
    t = c * C + tl.arange(0, C)
    x = tl.arange(0, BX)
    m = (t[:, None] < T) & (x[None, :] < X)
    return tl.load(ptr + bh.to(tl.int64) * T * X + t[:, None] * X + x[None, :], mask=m, other=0.0)


@triton.jit
def _put(ptr, val, bh, c, T, X, C: tl.constexpr, BX: tl.constexpr):
    t = c * C + tl.arange(0, C)
    x = tl.arange(0, BX)
    m = (t[:, None] < T) & (x[None, :] < X)
    tl.store(ptr + bh.to(tl.int64) * T * X + t[:, None] * X + x[None, :], val.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _row(ptr, bh, c, T, C: tl.constexpr, other):
    t = c * C + tl.arange(0, C)
    return tl.load(ptr + bh.to(tl.int64) * T + t, mask=t < T, other=other)


@triton.jit
def _chunk_mat(ptr, bh, c, n, BF: tl.constexpr, BD: tl.constexpr):
    """The (BF, BD) fp32 matrix of chunk c in a (BH, n, BF, BD) buffer (and its address)."""
    off = (bh.to(tl.int64) * n + c) * BF * BD
    idx = tl.arange(0, BF)[:, None] * BD + tl.arange(0, BD)[None, :]
    return ptr + off + idx


@triton.jit
def _chunk_vec(ptr, bh, c, n, BF: tl.constexpr):
    return ptr + (bh.to(tl.int64) * n + c) * BF + tl.arange(0, BF)


@triton.jit
def _state_kernel(k_ptr, v_ptr, s_ptr, z_ptr, T, F, D, C: tl.constexpr, BF: tl.constexpr,
                  BD: tl.constexpr, RELU: tl.constexpr, PREC: tl.constexpr):
    c, bh, n = tl.program_id(0), tl.program_id(1), tl.num_programs(0)
    k = _tile(k_ptr, bh, c, T, F, C, BF)
    k = tl.maximum(k, 0.0) if RELU else k
    v = _tile(v_ptr, bh, c, T, D, C, BD)
    tl.store(_chunk_mat(s_ptr, bh, c, n, BF, BD), tl.dot(tl.trans(k), v, input_precision=PREC))
    tl.store(_chunk_vec(z_ptr, bh, c, n, BF), tl.sum(k.to(tl.float32), 0))


@triton.jit
def _load_qkv(q_ptr, k_ptr, v_ptr, bh, c, T, F, D, C: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr,
              RELU: tl.constexpr, PREC: tl.constexpr):
    """Raw q, k (pre-activations with RELU), features q, k, values v, A = tril(q k^T) in fp32."""
    qr = _tile(q_ptr, bh, c, T, F, C, BF)
    kr = _tile(k_ptr, bh, c, T, F, C, BF)
    q = tl.maximum(qr, 0.0) if RELU else qr
    k = tl.maximum(kr, 0.0) if RELU else kr
    v = _tile(v_ptr, bh, c, T, D, C, BD)
    i = tl.arange(0, C)
    A = tl.where(i[:, None] >= i[None, :], tl.dot(q, tl.trans(k), input_precision=PREC), 0.0)
    return qr, kr, q, k, v, A


@triton.jit
def _out_kernel(q_ptr, k_ptr, v_ptr, p_ptr, zp_ptr, o_ptr, den_ptr, T, F, D, eps, C: tl.constexpr,
                BF: tl.constexpr, BD: tl.constexpr, RELU: tl.constexpr, PREC: tl.constexpr):
    c, bh, n = tl.program_id(0), tl.program_id(1), tl.num_programs(0)
    _, _, q, k, v, A = _load_qkv(q_ptr, k_ptr, v_ptr, bh, c, T, F, D, C, BF, BD, RELU, PREC)
    P = tl.load(_chunk_mat(p_ptr, bh, c, n, BF, BD))
    zP = tl.load(_chunk_vec(zp_ptr, bh, c, n, BF))
    num = tl.dot(A.to(v.dtype), v, input_precision=PREC) + tl.dot(q, P.to(q.dtype), input_precision=PREC)
    den = tl.sum(A, 1) + tl.sum(q.to(tl.float32) * zP[None, :], 1)
    _put(o_ptr, num / tl.maximum(den, eps)[:, None], bh, c, T, D, C, BD)
    t = c * C + tl.arange(0, C)
    tl.store(den_ptr + bh.to(tl.int64) * T + t, den, mask=t < T)


@triton.jit
def _dstate_kernel(q_ptr, k_ptr, v_ptr, p_ptr, zp_ptr, den_ptr, do_ptr, dden_ptr, ds_ptr, dz_ptr, T, F, D,
                   eps, C: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr, RELU: tl.constexpr,
                   PREC: tl.constexpr):
    c, bh, n = tl.program_id(0), tl.program_id(1), tl.num_programs(0)
    _, _, q, k, v, A = _load_qkv(q_ptr, k_ptr, v_ptr, bh, c, T, F, D, C, BF, BD, RELU, PREC)
    P = tl.load(_chunk_mat(p_ptr, bh, c, n, BF, BD))
    num = tl.dot(A.to(v.dtype), v, input_precision=PREC) + tl.dot(q, P.to(q.dtype), input_precision=PREC)
    den = _row(den_ptr, bh, c, T, C, 1.0)
    dmax = tl.maximum(den, eps)
    do = _tile(do_ptr, bh, c, T, D, C, BD).to(tl.float32)
    # d/d den of num / max(den, eps): -(dout . num) / max(den, eps)^2 where den >= eps (as clamp)
    dden = tl.where(den >= eps, -tl.sum(do * num, 1) / (dmax * dmax), 0.0)
    t = c * C + tl.arange(0, C)
    tl.store(dden_ptr + bh.to(tl.int64) * T + t, dden, mask=t < T)
    dnum = (do / dmax[:, None]).to(q.dtype)
    tl.store(_chunk_mat(ds_ptr, bh, c, n, BF, BD), tl.dot(tl.trans(q), dnum, input_precision=PREC))
    tl.store(_chunk_vec(dz_ptr, bh, c, n, BF), tl.sum(q.to(tl.float32) * dden[:, None], 0))


@triton.jit
def _grad_kernel(q_ptr, k_ptr, v_ptr, p_ptr, zp_ptr, r_ptr, rz_ptr, den_ptr, do_ptr, dden_ptr, dq_ptr, dk_ptr,
                 dv_ptr, T, F, D, eps, C: tl.constexpr, BF: tl.constexpr, BD: tl.constexpr,
                 RELU: tl.constexpr, PREC: tl.constexpr):
    c, bh, n = tl.program_id(0), tl.program_id(1), tl.num_programs(0)
    qr, kr, q, k, v, A = _load_qkv(q_ptr, k_ptr, v_ptr, bh, c, T, F, D, C, BF, BD, RELU, PREC)
    dt = v.dtype
    P = tl.load(_chunk_mat(p_ptr, bh, c, n, BF, BD)).to(dt)
    zP = tl.load(_chunk_vec(zp_ptr, bh, c, n, BF))
    R = tl.load(_chunk_mat(r_ptr, bh, c, n, BF, BD)).to(dt)
    Rz = tl.load(_chunk_vec(rz_ptr, bh, c, n, BF))
    dmax = tl.maximum(_row(den_ptr, bh, c, T, C, 1.0), eps)
    dnum = (_tile(do_ptr, bh, c, T, D, C, BD).to(tl.float32) / dmax[:, None]).to(dt)
    dden = _row(dden_ptr, bh, c, T, C, 0.0)
    i = tl.arange(0, C)
    dA = tl.dot(dnum, tl.trans(v), input_precision=PREC) + dden[:, None]
    dA = tl.where(i[:, None] >= i[None, :], dA, 0.0).to(dt)
    dq = tl.dot(dA, k, input_precision=PREC) + tl.dot(dnum, tl.trans(P), input_precision=PREC)
    dq += dden[:, None] * zP[None, :]
    dk = tl.dot(tl.trans(dA), q, input_precision=PREC) + tl.dot(v, tl.trans(R), input_precision=PREC)
    dk += Rz[None, :]
    dv = tl.dot(tl.trans(A.to(dt)), dnum, input_precision=PREC) + tl.dot(k, R, input_precision=PREC)
    if RELU:
        dq = tl.where(qr > 0, dq, 0.0)
        dk = tl.where(kr > 0, dk, 0.0)
    _put(dq_ptr, dq, bh, c, T, F, C, BF)
    _put(dk_ptr, dk, bh, c, T, F, C, BF)
    _put(dv_ptr, dv, bh, c, T, D, C, BD)


def _meta(q: Tensor, v: Tensor, C: int):
    """Grid and compile-time sizes: (grid, BH, T, F, D, n, BF, BD, PREC)."""
    B, H, T, F = q.shape
    D = v.size(-1)
    n = triton.cdiv(T, C)
    BF, BD = max(16, triton.next_power_of_2(F)), max(16, triton.next_power_of_2(D))
    prec = "ieee" if v.dtype == torch.float32 else "tf32"  # tf32 is ignored for half operands
    return (n, B * H), B * H, T, F, D, n, BF, BD, prec


def _prefix(k, v, C, relu, exclusive_suffix=False):
    """Per-chunk K^T V (BH, n, BF, BD) and sum K (BH, n, BF) in fp32, as exclusive prefixes."""
    grid, BH, T, F, D, n, BF, BD, prec = _meta(k, v, C)
    s = torch.empty(BH, n, BF, BD, dtype=torch.float32, device=v.device)
    z = torch.empty(BH, n, BF, dtype=torch.float32, device=v.device)
    _state_kernel[grid](k, v, s, z, T, F, D, C, BF, BD, relu, prec)
    return _exclusive(s, 1), _exclusive(z, 1)


def _exclusive(x: Tensor, dim: int, reverse: bool = False) -> Tensor:
    """Exclusive cumulative sum over chunks (dim 1): P_c = sum_{c' < c} x_c' (c' > c if reverse)."""
    if reverse:
        return _exclusive(x.flip(dim), dim).flip(dim)
    out = torch.zeros_like(x)
    out[:, 1:] = x[:, :-1].cumsum(dim)
    return out


class TritonLinearAttention(torch.autograd.Function):
    """See ``causal_triton``. Kept between forward and backward: the (contiguous) inputs and one
    fp32 denominator per position; chunk states are recomputed."""

    @staticmethod
    def forward(ctx, q, k, v, eps, C, relu):
        grid, BH, T, F, D, n, BF, BD, prec = _meta(q, v, C)
        P, zP = _prefix(k, v, C, relu)
        out = torch.empty_like(v)
        den = torch.empty(q.shape[:3], dtype=torch.float32, device=v.device)
        _out_kernel[grid](q, k, v, P, zP, out, den, T, F, D, eps, C, BF, BD, relu, prec)
        ctx.save_for_backward(q, k, v, den)
        ctx.eps, ctx.C, ctx.relu = eps, C, relu
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, den = ctx.saved_tensors
        eps, C, relu = ctx.eps, ctx.C, ctx.relu
        grid, BH, T, F, D, n, BF, BD, prec = _meta(q, v, C)
        dout = dout.to(v.dtype).contiguous()
        P, zP = _prefix(k, v, C, relu)
        dden = torch.empty_like(den)
        dS, dz = torch.empty_like(P), torch.empty_like(zP)
        _dstate_kernel[grid](q, k, v, P, zP, den, dout, dden, dS, dz, T, F, D, eps, C, BF, BD, relu, prec)
        R, Rz = _exclusive(dS, 1, reverse=True), _exclusive(dz, 1, reverse=True)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _grad_kernel[grid](q, k, v, P, zP, R, Rz, den, dout, dden, dq, dk, dv, T, F, D, eps, C, BF, BD, relu, prec)
        return dq, dk, dv, None, None, None


@autocast_off
def causal_triton(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = DEFAULT_EPS, chunk_size: int = DEFAULT_CHUNK_SIZE,
    relu: bool = False,
) -> Tensor:
    """Exact causal linear attention with fused Triton kernels, forward and backward.
    phi_q/phi_k (B, H, T, F), v (B, H, T, D) -> (B, H, T, D) in v's dtype (q, k are cast to it).
    ``relu``: phi_q / phi_k are pre-activations and phi = relu of them is taken on load (their
    gradients are the pre-activations'). Padded keys: zero phi_k (or its pre-activation)
    beforehand, as for every form (``mask_padded_keys``). ``chunk_size``: a power of 2, >= 16.
    Non-contiguous inputs are copied to contiguous (B, H, T, X)."""
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"causal_triton: chunk_size must be a power of 2 >= 16 (tl.dot tiles), got {chunk_size}")
    if not v.is_cuda and not INTERPRETED:
        raise ValueError("causal_triton needs CUDA tensors (or a process started with TRITON_INTERPRET=1 "
                         "for Triton's CPU interpreter)")
    q, k, vv = (t.to(v.dtype).contiguous() for t in (phi_q, phi_k, v))
    return TritonLinearAttention.apply(q, k, vv, float(eps), int(chunk_size), bool(relu))
