"""chunked_passes' head groups: cache-sized on CPU (unchanged), all heads at once on CUDA.

The CUDA sizing cannot run here; what it computes can: one group of every head, forced on CPU,
gives the chunked form's outputs and gradients within float64 rounding of the grouped CPU run
(the passes are per (batch, head) row, so grouping changes only which rows share a bmm call)."""
import pytest
import torch

from fairseq_t2r import ops
from fairseq_t2r.ops.additive import chunked_passes


def test_heads_per_group_cuda_takes_all_heads_cpu_unchanged():
    rows = chunked_passes._GROUP_ROWS
    for G, Tp in ((64, 8192), (64, 1024), (8, 64), (1, 100000), (3, 1)):
        assert chunked_passes.heads_per_group(G, Tp, True) == G
        assert chunked_passes.heads_per_group(G, Tp, False) == max(1, min(G, rows // Tp))  # today's rule
    assert chunked_passes.heads_per_group(64, 8192, False) == 1
    assert chunked_passes.heads_per_group(64, 1024, False) == 8
    assert chunked_passes._groups(64, 8192, True) == [(0, 64)]
    assert chunked_passes._groups(5, 4096, False) == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.parametrize("relu_from_input", [False, True])
def test_one_group_of_all_heads_equals_grouped_in_float64(monkeypatch, relu_from_input):
    """T = 150 (chunks of 64, the last partial), B * H = 6 rows in groups of 1 (tiny _GROUP_ROWS)
    vs one group (the CUDA sizing); padded keys; outputs and every gradient."""
    B, H, T, F, D, C = 2, 3, 150, 4, 5, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    w = torch.randn(H * (2 * F + D), C, generator=g, dtype=torch.float64) / C**0.5
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, :7] = True
    dout = torch.randn(T, B, H * D, generator=g, dtype=torch.float64)

    def run():
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        if relu_from_input:
            out = ops.causal_relu_from_input(xs, ws, None, H, F, mask)
        else:
            y = torch.relu(torch.nn.functional.linear(xs, ws)).view(T, B, H, -1).permute(1, 2, 0, 3)
            phi_k = ops.mask_padded_keys(y[..., F : 2 * F], mask)
            out = ops.causal_chunked(y[..., :F], phi_k, y[..., 2 * F :]).permute(2, 0, 1, 3).reshape(T, B, -1)
        return [out.detach()] + list(torch.autograd.grad(out, (xs, ws), dout))

    monkeypatch.setattr(chunked_passes, "_GROUP_ROWS", 1)
    assert len(chunked_passes._groups(B * H, 192)) == B * H
    grouped = run()
    monkeypatch.setattr(chunked_passes, "heads_per_group", lambda G, Tp, is_cuda: G)  # the CUDA rule
    assert chunked_passes._groups(B * H, 192) == [(0, B * H)]
    one = run()
    for a, b in zip(one, grouped):
        assert (a - b).abs().max().item() <= 1e-12 * b.abs().max().item()
