"""Run by tests/ops/test_triton_linear.py in a subprocess: triton_linear's kernels under Triton's
interpreter (which must be chosen before triton is first imported: its own library functions,
tl.sum included, are jit functions too), against the float64 reference. Prints one JSON object:
check name -> list of max relative errors (out, then gradients), or an error line."""
import json
import os
import sys
import traceback

os.environ["TRITON_INTERPRET"] = "1"
if "triton" in sys.modules:
    sys.exit("triton was imported before TRITON_INTERPRET=1 was set")

import torch  # noqa: E402

from fairseq_t2r import ops  # noqa: E402
from fairseq_t2r.ops.additive import fused_relu  # noqa: E402
from fairseq_t2r.ops.additive import triton as tlin  # noqa: E402


def inputs(B=2, H=2, T=37, F=16, D=8, seed=0):
    """Pre-activations of q, k (B, H, T, F), values (B, H, T, D), an output gradient, all float64,
    and a key padding mask (B, T) with the first 5 keys of sequence 1 padded (left padding)."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, T, F, generator=g, dtype=torch.float64) for _ in range(2))
    v, dout = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(2))
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, :5] = True
    return q, k, v, dout, mask


def max_rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max()).item()


def attention(dtype, relu, chunk=16):
    """[out, dq, dk, dv] errors of causal_triton in ``dtype`` (T = 37: chunks of 16, the last
    partial; padded keys), relu on load or phi given, + the padded keys' largest gradient."""
    q, k, v, dout, mask = inputs()
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = ops.causal_reference(torch.relu(ref_in[0]), ops.mask_padded_keys(torch.relu(ref_in[1]), mask), ref_in[2])
    ref_grads = torch.autograd.grad(ref, ref_in, dout)
    xs = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    if relu:  # relu applied on load by the kernel; padding zeroes the key pre-activations
        out = tlin.causal_triton(xs[0], ops.mask_padded_keys(xs[1], mask), xs[2], chunk_size=chunk, relu=True)
    else:
        phi_q, phi_k = torch.relu(xs[0]), ops.mask_padded_keys(torch.relu(xs[1]), mask)
        out = tlin.causal_triton(phi_q, phi_k, xs[2], chunk_size=chunk)
    grads = torch.autograd.grad(out, xs, dout.to(dtype))
    assert out.dtype == dtype and out.shape == ref.shape, (out.dtype, out.shape)
    errs = [max_rel(out, ref)] + [max_rel(a, b) for a, b in zip(grads, ref_grads)]
    return errs + [grads[1][1, :, :5].abs().max().item()]


def feature_map_weights():
    """T2R's map end to end: x -> (q, k) pre-activations = x W + b -> kernel, relu on load;
    [dW, db] errors against the same graph in float64 through the reference."""
    B, H, T, C, F, D = 1, 2, 21, 12, 16, 8
    g = torch.Generator().manual_seed(3)
    x, W, b = torch.randn(B, T, C, generator=g), torch.randn(2 * H * F, C, generator=g) / C**0.5, torch.randn(2 * H * F, generator=g)
    v, dout = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)

    def run(W, b, dtype):
        pre = (x.to(dtype) @ W.t() + b).view(B, T, 2, H, F).permute(2, 0, 3, 1, 4)  # (2, B, H, T, F)
        if dtype == torch.float64:
            return ops.causal_reference(torch.relu(pre[0]), torch.relu(pre[1]), v.to(dtype))
        return tlin.causal_triton(pre[0], pre[1], v, chunk_size=16, relu=True)

    Wd, bd = W.double().requires_grad_(), b.double().requires_grad_()
    want = torch.autograd.grad(run(Wd, bd, torch.float64), (Wd, bd), dout.double())
    Wf, bf = W.clone().requires_grad_(), b.clone().requires_grad_()
    got = torch.autograd.grad(run(Wf, bf, torch.float32), (Wf, bf), dout)
    return [max_rel(a, w) for a, w in zip(got, want)]


def relu_from_input():
    """fused_relu.causal_relu_triton_from_input (the FAIRSEQ_T2R_TRITON=1 form of relu layers on
    CUDA) in fp32 against causal_relu_from_input's fused chunked form, run here directly (CPU
    tensors: the policy picks it), in float64 then fp32: [out, dx, dW, db] errors, twice."""
    T, B, H, F, D, C = 37, 2, 2, 16, 8, 12
    g = torch.Generator().manual_seed(4)
    x, dout = torch.randn(T, B, C, generator=g), torch.randn(T, B, H * D, generator=g)
    w, b = torch.randn(H * (2 * F + D), C, generator=g) / C**0.5, torch.randn(H * (2 * F + D), generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, :5] = True

    def run(fn, dtype, **kw):
        xs, ws, bs = (t.detach().to(dtype).requires_grad_() for t in (x, w, b))
        out = fn(xs, ws, bs, H, F, mask, **kw)
        return [out] + list(torch.autograd.grad(out, (xs, ws, bs), dout.to(dtype)))

    got = run(fused_relu.causal_relu_triton_from_input, torch.float32, chunk_size=16)
    errs = []
    for dtype in (torch.float64, torch.float32):
        want = run(ops.causal_relu_from_input, dtype, chunk_size=16)
        errs += [max_rel(a, w_) for a, w_ in zip(got, want)]
    return errs


def bad_chunk_size():
    q, k, v, _, _ = inputs(T=8)
    try:
        tlin.causal_triton(q.float(), k.float(), v.float(), chunk_size=24)
    except ValueError as e:
        return str(e)
    return "no error"


CHECKS = {
    "fp32_relu": lambda: attention(torch.float32, True),
    "fp32_phi": lambda: attention(torch.float32, False),
    "fp16_relu": lambda: attention(torch.float16, True),
    "weights": feature_map_weights,
    "bad_chunk": bad_chunk_size,
    "relu_from_input": relu_from_input,
}

if __name__ == "__main__":
    torch.set_num_threads(1)
    result = {"interpreted": tlin.INTERPRETED}
    for name, fn in CHECKS.items():
        try:
            result[name] = fn()
        except Exception:
            result[name] = "error: " + traceback.format_exc()[-2000:]
    print(json.dumps(result))
