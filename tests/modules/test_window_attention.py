"""--t2r-window W in T2RAttention, for every registered state: the training forward (chunked
window + the state's parallel form on the delayed stream) and token-by-token decoding (ring buffer
+ the state in fairseq's incremental state) both equal a token-by-token float64 reference written
here from the definition (ops/window's docstring), with padding, a prompt, beam reordering, batch
shrinking and .clone() snapshots; the incremental state keeps a constant size; the branch
ablation runs one branch."""
import copy

import pytest
import torch
from fairseq.modules import MultiheadAttention
from utils import step_by_step

from fairseq_t2r.modules import T2RAttention
from fairseq_t2r.modules.states import state_class, state_names

TOL = 1e-8
W = 5


def make(state, window=W, branch="both", seed=0):
    torch.manual_seed(seed)
    options = dict(state=state, norm=state_class(state).norms[0])
    attn = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8, state_options=options,
                                     window_options=dict(window=window, window_branch=branch)).double().eval()
    with torch.no_grad():  # off the swap's initialisation: data-dependent gates, an unequal factor per head
        for p in list(attn.state_update.parameters()) + list(attn.window.parameters()):
            p.add_(torch.randn_like(p))
    return attn


def reference(attn, x, kpm=None):
    """Token by token: query i's window terms exp(q_i . k_j), j in [i-W+1, i] not padded (unshifted,
    float64), and the state holding the keys j <= i - W (key j pushed with ``update`` at step j + W),
    joined as the docstring of ops/window says: (n_win + a n_lin) / (d_win + a d_lin) for a summed
    state, sig(g) y_win + (1 - sig(g)) finish(read) for a mixed one."""
    su, win = attn.state_update, attn.window
    T, B, _ = x.shape
    pad = torch.zeros(B, T, dtype=torch.bool) if kpm is None else kpm
    q = attn._heads(attn.q_proj(x) * attn.scaling)
    k, v = attn._heads(attn.k_proj(x)), attn._heads(attn.v_proj(x))
    phi_q, phi_k = attn._phi_queries_keys(x, x, pad)
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], -1)
    state, out = None, []
    for i in range(T):
        j = i - win.window
        if j >= 0:
            inputs = su.token_inputs(x[j : j + 1], attn.k_proj, pad[:, j : j + 1])
            state = su.update(state, phi_k[:, :, j].clone(), v1[:, :, j : j + 1], inputs)
        e = torch.zeros(B, 2, T, dtype=torch.float64)
        for jj in range(max(0, i - win.window + 1), i + 1):
            e[:, :, jj] = torch.exp((q[:, :, i] * k[:, :, jj]).sum(-1)) * ~pad[:, None, jj]
        n_win, d_win = torch.einsum("bhj,bhjd->bhd", e, v), e.sum(-1)
        if win.summed:
            n_lin, d_lin = (torch.zeros_like(n_win), torch.zeros_like(d_win)) if state is None else \
                (t[:, :, 0] for t in su.read_sums(phi_q[:, :, i : i + 1], state))
            a = torch.exp(win.log_factor)[None, :]
            n_lin, d_lin = torch.where(d_lin[..., None] > 0, a[..., None] * n_lin, 0.0), torch.where(d_lin > 0, a * d_lin, 0.0)
            den = d_win + d_lin
            out.append(torch.where(den[..., None] > 0, (n_win + n_lin) / den.clamp(min=1e-300)[..., None], 0.0))
        else:
            y_lin = 0.0 if state is None else su.finish(su.read(phi_q[:, :, i : i + 1], state, attn.eps,
                                                                torch.float64))[:, :, 0]
            g = torch.sigmoid(win.mix_logit)[None, :, None]
            y_win = torch.where(d_win[..., None] > 0, n_win / d_win.clamp(min=1e-300)[..., None], 0.0)
            out.append(g * y_win + (1 - g) * y_lin)
    return attn.out_proj(attn._unheads(torch.stack(out, 2)))


@pytest.mark.parametrize("state", state_names())
def test_parallel_and_recurrent_equal_the_reference_with_padding(state):
    """80 tokens (two of the chunked form's 64-query blocks), right padding, a padded token mid-sequence."""
    attn = make(state)
    T, B = 80, 3
    x = torch.randn(T, B, 16, dtype=torch.float64)
    kpm = torch.arange(T)[None, :] >= torch.tensor([80, 50, 4])[:, None]
    kpm[1, 3] = True
    with torch.no_grad():
        ref = reference(attn, x, kpm)
        parallel, _ = attn(x, x, x, key_padding_mask=kpm)
        recurrent, _ = step_by_step(attn, x, kpm)
    assert attn.window.summed == attn.state_update.normalize
    assert (parallel - ref).abs().max().item() <= TOL
    assert (recurrent - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("state", state_names())
def test_prompt_beam_reordering_shrinking_and_clone(state):
    """A prompt (several tokens continuing the state), then beam reordering and a batch that
    shrinks as sentences finish, across the window's evictions; a .clone() snapshot decodes
    the same continuation again; the state's size does not grow with the tokens."""
    attn = make(state, seed=1)
    B, m, rest = 4, 7, 9
    gen = torch.Generator().manual_seed(3)
    prefix = torch.randn(m, B, 16, dtype=torch.float64, generator=gen)
    cont = torch.randn(rest, 3, 16, dtype=torch.float64, generator=gen)
    order = torch.tensor([2, 0, 2])  # beams copied, one sentence finished: 4 rows -> 3
    with torch.no_grad():
        state = {}
        attn(prefix, prefix, prefix, incremental_state=state)
        sizes = {k: v.shape for buf in state.values() for k, v in buf.items()}
        attn.reorder_incremental_state(state, order)
        snapshot = {key: {k: v.clone() for k, v in buf.items()} for key, buf in state.items()}
        after, _ = step_by_step(attn, cont, state=state)
        again, _ = step_by_step(attn, cont, state=snapshot)
        full = torch.cat([prefix[:, order], cont], 0)
        ref = reference(attn, full)
    assert (after - ref[m:]).abs().max().item() <= TOL
    assert torch.equal(after, again)
    grown = {k: v.shape for buf in state.values() for k, v in buf.items()}
    assert {k: s[1:] for k, s in grown.items()} == {k: s[1:] for k, s in sizes.items() if k in grown}
    assert set(grown) >= {"win_k", "win_v", "win_phi_k", attn.state_update.state_key}


@pytest.mark.parametrize("state", ["additive", "delta"])
def test_branch_ablation(state):
    """window: softmax over the last W tokens alone; linear: the state alone over every token (the
    same module without its window); both differ from the windowed output."""
    both, only_window, only_linear = (make(state, branch=b) for b in ("both", "window", "linear"))
    T, B = 20, 2
    x = torch.randn(T, B, 16, dtype=torch.float64)
    with torch.no_grad():
        y, yw, yl = (a(x, x, x)[0] for a in (both, only_window, only_linear))
        yw_steps, _ = step_by_step(only_window, x)
        only_linear.window = None
        plain, _ = only_linear(x, x, x)
        q = both._heads(both.q_proj(x) * both.scaling)
        k, v = both._heads(both.k_proj(x)), both._heads(both.v_proj(x))
        s = q @ k.transpose(-1, -2)
        i = torch.arange(T)
        s = s.masked_fill((i[None, :] > i[:, None]) | (i[None, :] <= i[:, None] - W), float("-inf"))
        soft = both.out_proj(both._unheads(torch.softmax(s, -1) @ v))
    assert (yw - soft).abs().max().item() <= TOL and (yw_steps - soft).abs().max().item() <= TOL
    assert torch.equal(yl, plain)
    if both.window.summed:  # nothing older than W yet: the sum is the window alone (a mix scales it)
        assert (y[:W] - yw[:W]).abs().max().item() <= TOL
    assert (y[W + 1:] - yw[W + 1:]).abs().max().item() > 1e-3 and (y - yl).abs().max().item() > 1e-3


def test_window_dropout_runs_the_state_alone_in_a_share_of_training_forwards():
    """--t2r-window-dropout p: a training forward runs the linear branch alone (the state over every
    key, as --t2r-window-branch linear) with probability p, per layer and forward; evaluation and
    decoding always keep the window."""
    x = torch.randn(14, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        both, only_linear = make("gate"), make("gate", branch="linear")
        y_both, y_lin = both(x, x, x)[0], only_linear(x, x, x)[0]
        assert (y_both - y_lin).abs().max().item() > 1e-3
        for p, expected in ((1.0, y_lin), (0.0, y_both)):
            both.window.dropout = p
            assert torch.equal(both.train()(x, x, x)[0], expected)
            assert torch.equal(both.eval()(x, x, x)[0], y_both)  # evaluation keeps the window
        both.window.dropout = 0.5
        torch.manual_seed(3)
        outs = [both.train()(x, x, x)[0] for _ in range(40)]
    dropped = sum(torch.equal(o, y_lin) for o in outs)
    assert sum(torch.equal(o, y_both) for o in outs) + dropped == 40 and 8 <= dropped <= 32
    with pytest.raises(ValueError, match="--t2r-window-dropout 1.5"):
        T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8,
                                  window_options=dict(window=W, window_dropout=1.5))


def test_gradients_reach_the_window_and_the_state():
    attn = make("gate").train()
    x = torch.randn(12, 2, 16, dtype=torch.float64)
    attn(x, x, x)[0].pow(2).sum().backward()
    assert attn.window.log_factor.grad.abs().min() > 0
    assert attn.state_update.gate_proj.weight.grad.abs().sum() > 0


def test_window_refused_for_cross_attention_and_bad_values():
    mha = MultiheadAttention(16, 2, encoder_decoder_attention=True, kdim=16, vdim=16)
    with pytest.raises(ValueError, match="cross-attention"):
        T2RAttention.from_softmax(copy.deepcopy(mha), "t2r", 8, window_options=dict(window=4))
    with pytest.raises(ValueError, match="--t2r-window -1"):
        make("additive", window=-1)
