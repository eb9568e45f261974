"""The window's written-out backward (ops/window/band.py) against autograd through the dense
definition, in float64: the band of the last W keys, padded keys out, m a constant of the
gradient; blocks shorter than the window (C < W), a window past the sequence, a partial last block."""
import pytest
import torch

from fairseq_t2r.ops.window.chunked import window_parts


def dense(q, k, v, window, kpm):
    T = q.size(2)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hidden = (j > i) | (j <= i - window) | kpm[:, None, None, :]
    s = (q @ k.transpose(-1, -2)).masked_fill(hidden, float("-inf"))
    m = s.amax(-1).detach()
    e = torch.exp(s - m.nan_to_num(neginf=0.0)[..., None])
    return m, e.sum(-1), e @ v


@pytest.mark.parametrize("T, window, chunk", [(21, 3, None), (21, 7, 4), (33, 5, 8), (10, 15, None)])
def test_backward_equals_autograd_of_the_definition(T, window, chunk):
    g = torch.Generator().manual_seed(T + window)
    q, k, v = (torch.randn(2, 3, T, 4, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    kpm = torch.rand(2, T, generator=g) < 0.25
    kpm[0, :4] = True  # left padding: the first queries see no key
    g_den, g_num = torch.randn(2, 3, T, dtype=torch.float64, generator=g), torch.randn(2, 3, T, 4, dtype=torch.float64,
                                                                                        generator=g)
    got, want = [], []
    for f, out in ((window_parts, got), (dense, want)):
        m, den, num = f(q, k, v, window, kpm) if f is dense else f(q, k, v, window, kpm, chunk)
        out += [m.nan_to_num(neginf=0.0), den, num]
        out += torch.autograd.grad((den * g_den).sum() + (num * g_num).sum(), (q, k, v))
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() <= 1e-10
