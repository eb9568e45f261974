"""The training form of relu feature maps (``t2r``): projection, relu, padding and the chunked
form in one autograd Function, with the memory of one projection; or, where ``dispatch``'s policy
picks the Triton kernels (``FAIRSEQ_T2R_TRITON=1``, CUDA, long sequences), the projection by
torch and the kernels with relu applied on load."""
from typing import Optional

import torch
from torch import Tensor

from .. import dispatch
from ..common import DEFAULT_CHUNK_SIZE, DEFAULT_EPS, autocast_off, mask_padded_keys
from .chunked_passes import chunked_backward, chunked_forward


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
    [query pre-features | key pre-features | values]; phi = relu of the first two blocks;
    key_padding_mask (B, T), True = pad. Returns (T, B, H * D), the heads side by side (what
    out_proj takes).

    The same as projecting, applying relu, masking padded keys and ``causal_chunked``, with the
    memory of one projection: the projection output holds phi and v in place, and the backward
    writes the gradients of the projection output back into that same tensor before the input
    and weight gradients are taken from it (``ProjectedReluLinearAttention``). Where
    ``dispatch.parallel_form`` says "triton", ``causal_relu_triton_from_input`` runs instead.
    """
    if dispatch.parallel_form(x.size(0), x.is_cuda, False, dtype=x.dtype) == "triton":
        return causal_relu_triton_from_input(x, weight, bias, num_heads, feature_dim, key_padding_mask, eps, chunk_size)
    return ProjectedReluLinearAttention.apply(
        x, weight, bias, key_padding_mask, num_heads, feature_dim, eps, chunk_size
    )


def causal_relu_triton_from_input(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    num_heads: int,
    feature_dim: int,
    key_padding_mask: Optional[Tensor] = None,
    eps: float = DEFAULT_EPS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """``causal_relu_from_input`` with the fused Triton kernels (``triton.py``, imported only
    here): same arguments, same (T, B, H * D) result. The projection x W^T + b is torch's (under
    autograd); the kernels take the pre-activations and apply relu on load. Padded keys get zero
    pre-activations (relu(0) = 0: no features, no gradient). CUDA tensors (or Triton's interpreter)."""
    from .triton import causal_triton  # the optional triton package

    T, B, _ = x.shape
    F = feature_dim
    y = torch.nn.functional.linear(x, weight, bias).view(T, B, num_heads, -1).permute(1, 2, 0, 3)
    pre_k = mask_padded_keys(y[..., F : 2 * F], key_padding_mask)
    out = causal_triton(y[..., :F], pre_k, y[..., 2 * F :], eps, chunk_size, relu=True)  # (B, H, T, D)
    return out.permute(2, 0, 1, 3).reshape(T, B, -1)


def _projected_heads(y4: Tensor, F: int):
    """(T, B, H, 2F + D) -> phi_q, phi_k, v as (B, H, T, X) views."""
    heads = y4.permute(1, 2, 0, 3)
    return heads[..., :F], heads[..., F : 2 * F], heads[..., 2 * F :]


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
        _, den, _ = chunked_forward(phi_q, phi_k, v, eps, chunk_size, out=out.permute(1, 2, 0, 3))
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
        chunked_backward(*heads, den, dout4, ctx.eps, ctx.chunk_size, into=heads, relu=True)
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
