"""The state-update interface every registered state keeps (modules/states/base.py), checked for
each one the registry holds, so a new state is covered without naming it here: its one-token
``step`` is ``update`` then ``read`` then ``finish``, and its parallel form fed with keys, values
and inputs delayed by W tokens (a sliding window's linear branch: a key enters the state when it
leaves the window) equals updating with the token that leaves and reading with the current query,
in float64, with padding."""
import pytest
import torch
from fairseq.modules import MultiheadAttention

from fairseq_t2r.modules import T2RAttention
from fairseq_t2r.modules.states import state_names

TOL = 1e-8


def make(name):
    torch.manual_seed(0)
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8,
                                     state_options={"state": name}).double().eval()
    with torch.no_grad():
        for p in attn.state_update.parameters():
            p.add_(torch.randn_like(p))
    return attn


def token(attn, x, kpm, t):
    """phi_q (B, H, 1, F), phi_k (B, H, F), v1 (B, H, 1, D + 1), inputs of token t of x (T, B, C)."""
    m = None if kpm is None else kpm[:, t : t + 1]
    phi_q, phi_k = attn._phi_queries_keys(x[t : t + 1], x[t : t + 1], m)
    v = attn._heads(attn.v_proj(x[t : t + 1]))
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], -1)
    return phi_q, phi_k[:, :, 0], v1, attn.state_update.token_inputs(x[t : t + 1], attn.k_proj, m)


@pytest.mark.parametrize("name", state_names())
def test_step_is_update_read_finish_and_delayed_parallel_is_delayed_steps(name):
    attn = make(name)
    su = attn.state_update
    T, B, W = 40, 2, 5
    x = torch.randn(T, B, 16, dtype=torch.float64)
    kpm = torch.zeros(B, T, dtype=torch.bool)
    kpm[1, :3] = True  # left padding
    with torch.no_grad():
        state, composed = None, None
        for t in range(T):
            phi_q, phi_k, v1, inputs = token(attn, x, kpm, t)
            out, state = su.step(phi_q, phi_k, v1, inputs, state, attn.eps, x.dtype)
            composed = su.update(composed, phi_k, v1, inputs)
            alone = su.finish(su.read(phi_q, composed, attn.eps, x.dtype))
            assert (out.reshape(alone.shape) - alone).abs().max().item() <= TOL
        # the linear branch of a window of W: keys, values and inputs delayed by W tokens (the
        # first W positions see no key: marked padded, so they leave the state as it is)
        shift = torch.cat([x[:1].expand(W, -1, -1), x[:-W]], 0)
        shift_kpm = torch.cat([torch.ones(B, W, dtype=torch.bool), kpm[:, :-W]], 1)
        phi_q, _ = attn._phi_queries_keys(x, x, kpm)
        _, phi_k = attn._phi_queries_keys(shift, shift, shift_kpm)
        v = attn._heads(attn.v_proj(shift))
        delayed = su.parallel(phi_q, phi_k, v, shift, attn.k_proj, shift_kpm, attn.eps, normalize=False)
        state = None
        for t in range(W, T):
            _, phi_k_t, v1, inputs = token(attn, x, kpm, t - W)  # the token that leaves the window
            state = su.update(state, phi_k_t, v1, inputs)
            read = su.read(phi_q[:, :, t : t + 1], state, attn.eps, x.dtype, normalize=False)
            assert (read[..., : v.size(-1)] - delayed[:, :, t : t + 1]).abs().max().item() <= TOL
        assert delayed[:, :, :W].abs().max().item() == 0.0  # no key yet
