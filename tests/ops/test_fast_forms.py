"""The fast forms against their references: the chunked autograd Function (values and gradients,
padding, small denominators, layouts, states), the fused relu-from-input Function, and the fla
wrapper (with a stand-in kernel: no CUDA here)."""
import pytest
import torch

from fairseq_t2r import ops
from fairseq_t2r.ops import kernels
from fairseq_t2r.ops.additive import fla as fla_glue  # the glue causal_parallel calls


def features(B, H, T, F, D, seed, layout="head"):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(T, B, H, F, dtype=torch.float64, generator=g)
    k = torch.rand(T, B, H, F, dtype=torch.float64, generator=g)
    v = torch.randn(T, B, H, D, dtype=torch.float64, generator=g)
    k[T // 3 : T // 2] = 0.0  # padded keys: zero features
    q[:3] *= 1e-4  # denominators below eps: the clamp and its gradient
    if layout == "head":
        q, k, v = (t.permute(1, 2, 0, 3).contiguous() for t in (q, k, v))
    else:  # what the module passes: permuted views of (T, B, H, X) projections
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))
    return [t.requires_grad_() for t in (q, k, v)]


@pytest.mark.parametrize("layout", ["head", "time"])
@pytest.mark.parametrize("T,chunk", [(1, 4), (7, 4), (64, 16), (100, 32), (257, 64), (700, 64)])
def test_chunked_function_values_and_gradients_equal_quadratic(T, chunk, layout):
    q, k, v = features(2, 3, T, 6, 5, seed=T, layout=layout)
    ref = ops.causal_quadratic(q, k, v)
    out = ops.causal_chunked(q, k, v, chunk_size=chunk)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (q, k, v), g)
    got = torch.autograd.grad(out, (q, k, v), g)
    assert (out - ref).abs().max().item() <= 1e-10
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() <= 1e-9
    assert out.stride() == torch.empty_like(v).stride()  # laid out like v: heads merge back as a view


def test_chunked_function_gradcheck():
    q, k, v = features(1, 2, 13, 3, 2, seed=5)
    assert torch.autograd.gradcheck(lambda a, b, c: ops.causal_chunked(a, b, c, chunk_size=4), (q, k, v))


def test_chunked_with_state_differentiable_and_not():
    q, k, v = features(1, 2, 90, 4, 3, seed=7)
    ref = ops.causal_reference(q.detach(), k.detach(), v.detach())
    with torch.no_grad():
        a, state = ops.causal_chunked(q[:, :, :37], k[:, :, :37], v[:, :, :37], chunk_size=16, return_state=True)
        b = ops.causal_chunked(q[:, :, 37:], k[:, :, 37:], v[:, :, 37:], chunk_size=16, initial_state=state)
    assert (torch.cat([a, b], 2) - ref).abs().max().item() <= 1e-10
    # with autograd through a state: the plain differentiable form
    a, state = ops.causal_chunked(q[:, :, :37], k[:, :, :37], v[:, :, :37], chunk_size=16, return_state=True)
    b = ops.causal_chunked(q[:, :, 37:], k[:, :, 37:], v[:, :, 37:], chunk_size=16, initial_state=state)
    out = torch.cat([a, b], 2)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    want = torch.autograd.grad(ops.causal_quadratic(q, k, v), (q, k, v), g)
    for x, y in zip(got, want):
        assert (x - y).abs().max().item() <= 1e-9


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_half_precision_sums_in_fp32(dtype):
    q, k, v = features(1, 2, 300, 8, 4, seed=3)
    ref = ops.causal_reference(q.detach(), k.detach(), v.detach())
    qh, kh, vh = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = ops.causal_chunked(qh, kh, vh)
    out.float().pow(2).sum().backward()
    assert out.dtype == dtype and qh.grad.dtype == dtype
    assert (out.double() - ref).abs().max().item() < 0.05


def _relu_from_input_reference(x, weight, bias, H, F, kpm):
    """Projection, relu, padded keys zeroed, token-by-token recurrence: autograd all the way."""
    T, B, _ = x.shape
    y = torch.nn.functional.linear(x, weight, bias).view(T, B, H, -1).permute(1, 2, 0, 3)
    phi_q, phi_k, v = torch.relu(y[..., :F]), torch.relu(y[..., F : 2 * F]), y[..., 2 * F :]
    out = ops.causal_reference(phi_q, ops.mask_padded_keys(phi_k, kpm), v)
    return out.permute(2, 0, 1, 3).reshape(T, B, -1)


@pytest.mark.parametrize("T,chunk,bias", [(1, 4, True), (37, 8, True), (150, 16, False), (300, 64, True)])
def test_relu_from_input_values_and_gradients_equal_reference(T, chunk, bias):
    g = torch.Generator().manual_seed(T)
    B, H, F, D = 2, 3, 4, 5
    x = torch.randn(T, B, H * D, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(H * (2 * F + D), H * D, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(weight.size(0), dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, T - T // 4 :] = True
    inputs = [t for t in (x, weight, b) if t is not None]
    ref = _relu_from_input_reference(x, weight, b, H, F, kpm)
    out = ops.causal_relu_from_input(x, weight, b, H, F, kpm, chunk_size=chunk)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    want = torch.autograd.grad(ref, inputs, grad)
    got = torch.autograd.grad(out, inputs, grad)
    assert out.shape == (T, B, H * D)
    assert (out - ref).abs().max().item() <= 1e-10
    for a, w in zip(got, want):
        assert (a - w).abs().max().item() <= 1e-9


def test_relu_from_input_backward_runs_once():
    """Its backward reuses the saved activations' storage for their gradients: a second backward
    through one forward is refused with a clear error, not silently wrong."""
    x = torch.randn(200, 1, 4, requires_grad=True)
    weight = torch.randn(2 * (2 * 3 + 2), 4, requires_grad=True)
    out = ops.causal_relu_from_input(x, weight, None, 2, 3)
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        out.sum().backward()


def fake_fla(q, k, v, scale=None, normalize=True, **kw):
    """Stand-in for fla's chunk_linear_attn(normalize=False): (B, T, H, X) layout, unnormalised."""
    assert normalize is False and scale == 1.0
    S = torch.einsum("bthf,bthd->bthfd", k, v).cumsum(1)
    return torch.einsum("bthf,bthfd->bthd", q, S), None


def test_fla_wrapper_semantics_with_a_stand_in_kernel(monkeypatch):
    monkeypatch.setattr(kernels, "_FLA_KERNEL", (fake_fla, {}))
    q, k, v = features(2, 3, 150, 6, 5, seed=11, layout="time")
    ref = ops.causal_chunked(q, k, v)
    got = ops.causal_fla(q, k, v)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        assert (a - b).abs().max().item() <= 1e-9
    assert (got - ref).abs().max().item() <= 1e-10
    # on CPU tensors the training form never takes the fla path
    calls = []
    monkeypatch.setattr(fla_glue, "causal_fla", lambda *a, **k: calls.append(1))
    ops.causal_parallel(q, k, v)
    assert not calls


def test_fla_absent_means_no_fla():
    try:
        import fla  # noqa: F401
    except ImportError:
        assert ops.fla_kernel() is None


