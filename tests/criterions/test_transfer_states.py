"""Attention transfer fits each state's own form, windowed ones included: the criterion's loss of a
gated state is the gated output's error (not the additive one's) and decreases when fitting, the
window's factor among what it fits; the weights it compares (--t2r-transfer-xent-weight) are the
windowed form's own matrix."""
import torch
from utils import FakeTask, tiny_lm

from fairseq_t2r import patches
from fairseq_t2r.checkpoint import is_new_tensor
from fairseq_t2r.criterions.attention_transfer import AttentionTransferCriterion
from fairseq_t2r.modules import T2RAttention
from fairseq_t2r.modules.transfer import linear_weights


def criterion_and_sample(seed=0, xent=0.0, **options):
    torch.manual_seed(seed)
    model = tiny_lm(**options).double()
    task = FakeTask(model.decoder.dictionary)
    patches.remember(task, model)
    tokens = torch.randint(4, 50, (2, 24), generator=torch.Generator().manual_seed(1))
    tokens[1, 18:] = task.target_dictionary.pad()
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": torch.tensor([24, 18])}, "target": tokens,
              "ntokens": int(tokens.ne(1).sum())}
    return model, AttentionTransferCriterion(task, xent), sample


def test_a_gated_states_transfer_loss_is_its_own_and_decreases_when_fitting():
    # the same seed draws the same feature maps whatever the state (states/base.py: constant_linear)
    additive = criterion_and_sample()
    gated = criterion_and_sample(t2r_state="gate", t2r_gate_source="key")
    windowed = criterion_and_sample(t2r_state="gate", t2r_gate_source="key", t2r_window=4)
    losses = [crit(model.train(), sample)[0].item() for model, crit, sample in (additive, gated, windowed)]
    assert abs(losses[0] - losses[1]) > 1e-3 * losses[0] and abs(losses[1] - losses[2]) > 1e-3 * losses[1]
    model, crit, sample = windowed
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(is_new_tensor(n) for n in names) and any(n.endswith(".window.log_factor") for n in names)
    opt = torch.optim.Adam(params, lr=1e-2)
    first = None
    for _ in range(8):
        opt.zero_grad()
        loss = crit(model, sample)[0]
        loss.backward()
        first = loss.item() if first is None else first
        opt.step()
    assert crit(model, sample)[0].item() < 0.8 * first


def test_windowed_transfer_weights_are_the_windowed_forms_matrix():
    model, crit, sample = criterion_and_sample(xent=0.1, t2r_state="gate", t2r_window=4)
    _, _, log = crit(model.train(), sample)
    assert torch.isfinite(log["transfer_xent"])
    attn = next(m for m in model.modules() if isinstance(m, T2RAttention))
    x = torch.randn(10, 2, 32, dtype=torch.float64)
    kpm = torch.zeros(2, 10, dtype=torch.bool)
    kpm[1, 7:] = True
    with torch.no_grad():
        phi_q, phi_k = attn._phi_queries_keys(x, x, kpm)
        v = attn._heads(attn.v_proj(x))
        weights = linear_weights(attn, phi_q, phi_k, x, kpm)
        out = attn.window.parallel(attn, x, kpm, phi_q, phi_k, v)
    assert (weights @ v - out).abs().max().item() <= 1e-10
    assert (weights.sum(-1) - 1).abs().max().item() <= 1e-10 and weights.min().item() >= 0
