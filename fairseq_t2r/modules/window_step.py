"""One decoding step of ``SlidingWindow`` (``window.py``): the W-slot ring buffer in fairseq's
incremental state, the evicted token pushed into the state, the window and the linear branch read
and combined in one softmax.

Written for few tensor operations (it runs once per layer and generated token, and at decoding
batch sizes small-op overhead and memory traffic are its cost, not arithmetic):
- the ring keeps what the evicted token needs to enter the state as it was computed when the token
  came in: its key features and its ``token_inputs`` (gates, write strengths: a few numbers per
  head), not the layer input they were recomputed from (C numbers per token, a quarter of the
  buffer);
- slot validity is an additive score bias (0, or -inf for an empty or padded slot): one add;
- keys are stored transposed (B, H, D, W), the layout a row-vector-times-matrix product reads
  fastest on CPU;
- a sum-normalised state joins the window as one more logit, log(a_h phi(q).z), beside the W
  scores: one softmax over W + 1 terms is LoLCATs' normalised sum with its joint max-shift
  (``ops.window.combine.sum_normalised``'s shift c = max(m, log D_l), which softmax takes itself),
  then one ``bmm`` reads the window's values and the linear branch's phi(q).S / phi(q).z is added.

Buffer (batch-major, so beam reordering, batch shrinking and ``.clone()`` need nothing new):
``win_k`` (B, H, D, W), ``win_v`` (B, H, W, D + 1) = [v | 1] (what ``update`` takes), ``win_bias``
(B, 1, 1, W), ``win_t`` (B,) the tokens seen; with the linear branch also ``win_phi_k`` (B, H, W,
F), ``win_in0``, ``win_in1``, ... the token inputs' tensors with W in their token dimension (B, H, W,
...), and the state under its own key.
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .. import ops


def _flat(inputs) -> List[Optional[Tensor]]:
    """A state's token inputs (None, a tensor or a tuple of tensors / None) as a list."""
    if inputs is None:
        return []
    return [inputs] if isinstance(inputs, Tensor) else list(inputs)


def _unflat(like, parts: List[Optional[Tensor]]):
    """``parts`` in the structure of ``like`` (token inputs of the same state)."""
    if like is None:
        return None
    return parts[0] if isinstance(like, Tensor) else tuple(parts)


def _allocate(buf, x, phi_k, v1, inputs, W, both):
    B, H, D1 = v1.size(0), v1.size(1), v1.size(-1)
    ct = v1.dtype
    buf.update(win_k=x.new_zeros(B, H, D1 - 1, W, dtype=ct), win_v=x.new_zeros(B, H, W, D1, dtype=ct),
               win_bias=x.new_full((B, 1, 1, W), float("-inf"), dtype=ct), win_t=x.new_zeros(B, dtype=torch.long))
    if both:  # what the evicted token needs to enter the state (the window alone keeps none)
        buf["win_phi_k"] = x.new_zeros(B, H, W, phi_k.size(-1), dtype=ct)
        for i, t in enumerate(_flat(inputs)):
            if t is not None:  # (B, H, 1, ...) -> (B, H, W, ...)
                buf[f"win_in{i}"] = t.new_zeros(*t.shape[:2], W, *t.shape[3:])


@torch.no_grad()
def window_step(win, attn, x: Tensor, q: Tensor, k: Tensor, phi_q: Tensor, phi_k: Tensor, v1: Tensor,
                pad: Optional[Tensor], buf: Dict[str, Optional[Tensor]]) -> Tensor:
    """``SlidingWindow.step`` (its docstring gives the shapes); ``win`` the window module."""
    su, W = attn.state_update, win.window
    B, H, _, D1 = v1.shape
    D = D1 - 1
    ct = ops.compute_dtype(v1.dtype)
    both = win.branch == "both"
    if v1.dtype != ct:
        v1, phi_k = v1.to(ct), phi_k.to(ct)
    inputs = su.token_inputs(x[None], attn.k_proj, pad) if both else None
    if "win_k" not in buf:
        _allocate(buf, x, phi_k, v1, inputs, W, both)
    kb, vb, bias = buf["win_k"], buf["win_v"], buf["win_bias"]
    t = int(buf["win_t"][0]) if B else 0
    slot = t % W
    parts = _flat(inputs)
    if both:
        rings = [None if p is None else buf[f"win_in{i}"] for i, p in enumerate(parts)]
        if t >= W:  # the token in the slot leaves the window: into the state, with its own inputs
            old = _unflat(inputs, [None if r is None else r[:, :, slot : slot + 1] for r in rings])
            buf[su.state_key] = su.update(buf.get(su.state_key), buf["win_phi_k"][:, :, slot], vb[:, :, slot : slot + 1],
                                          old)
        buf["win_phi_k"][:, :, slot] = phi_k
        for r, p in zip(rings, parts):
            if r is not None:
                r[:, :, slot : slot + 1] = p
    kb[..., slot] = k
    vb[:, :, slot] = v1[:, :, 0]
    bias[..., slot] = 0.0 if pad is None else torch.zeros_like(bias[:, 0, 0, slot]).masked_fill_(
        pad[:, 0].bool(), float("-inf"))[:, None, None]
    buf["win_t"].add_(1)
    s = torch.matmul(q.view(B, H, 1, D).to(ct), kb).add_(bias)  # (B, H, 1, W): the window's scores
    state = buf.get(su.state_key) if both else None
    if state is not None and win.summed:  # the linear branch as one more logit beside the window's
        n_lin, d_lin = su.read_sums(phi_q, state)  # (B, H, 1, D), (B, H, 1)
        d_lin = d_lin[..., None].to(ct)
        # a total <= 0 (only a signed map gives one) is no linear mass: log 0 = -inf, weight 0
        log_lin = d_lin.clamp(min=0).log_().add_(win.log_factor.to(ct).view(1, H, 1, 1))
        p = torch.softmax(torch.cat([s, log_lin], -1), -1).nan_to_num_(0.0)  # nothing visible: 0
        lin = (p[..., W:] / d_lin.clamp(min=torch.finfo(ct).tiny)) * n_lin.to(ct)  # weight * phi(q).S / phi(q).z
        # the ring's values whole, [v | 1] (its column sum dropped): a slice of them made bmm copy the ring
        y = torch.bmm(p.view(B * H, 1, W + 1)[..., :W], vb.view(B * H, W, D1)).view(B, H, D1)[..., :D]
        return y.add_(lin.view(B, H, D)).to(x.dtype)
    p = torch.softmax(s, -1).nan_to_num_(0.0)  # an empty window (left padding) outputs 0
    y_win = torch.bmm(p.view(B * H, 1, W), vb.view(B * H, W, D1)).view(B, H, D1)[..., :D]
    if not both or win.summed:  # the window alone, or a summed state with no linear mass yet: its softmax
        return y_win.to(x.dtype)
    g = torch.sigmoid(win.mix_logit.to(ct)).view(1, H, 1)
    out = g * y_win
    if state is not None:
        out = out + (1 - g) * su.finish(su.read(phi_q, state, attn.eps, ct))[:, :, 0]
    return out.to(x.dtype)
