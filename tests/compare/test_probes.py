"""The probes of t2r-compare on hand-made inputs with known answers: the recall split of a made-up
sequence, copying by a model that copies perfectly against one that cannot, the passkey
generator's determinism and layout, and how far each kind of positions lets a model run."""
import numpy as np
import pytest
import torch
from utils import FakeTask, dictionary, lm_args

from fairseq_t2r.compare import copying, passkey, recall
from fairseq_t2r.compare.models import Loaded, score
from fairseq_t2r.errors import T2RUserError
from fairseq_t2r.models import positions
from fairseq_t2r.models.t2r_transformer_lm import T2RTransformerLanguageModel


def test_recall_split_of_a_made_up_sequence():
    seq = np.array([5, 6, 7, 5, 6, 7, 8, 5, 6])
    vocab = 10
    counts = recall.bigram_counts(np.array([5, 6] * 10 + [6, 7]), vocab)  # (5,6) common, (6,7) seen once
    parts = recall.split(seq, vocab, counts, first_target=1)
    # (5,6) again at 4 and 8, (6,7) again at 5; (5,6,7) again at 5; (6,7) is the rare one
    assert np.flatnonzero(parts["repeated-2"]).tolist() == [4, 5, 8]
    assert np.flatnonzero(parts["repeated-3"]).tolist() == [5]
    assert np.flatnonzero(parts["rare-2"]).tolist() == [5]
    assert np.flatnonzero(parts["other"]).tolist() == [1, 2, 3, 6, 7]
    assert counts[5 * vocab + 6] == 10 and counts[6 * vocab + 7] == 1 and 7 * vocab + 8 not in counts
    # the first target position is never counted, even when it repeats
    assert not recall.split(np.array([3, 3, 3]), vocab, None, first_target=2)["repeated-2"][1]


class Copier(torch.nn.Module):
    """Predicts, at every position, the token that followed the last earlier occurrence of the
    current token (an induction head); uniform where the current token is new. ``copies=False``:
    uniform everywhere (a model that cannot copy)."""

    def __init__(self, vocab, copies=True):
        super().__init__()
        self.vocab, self.copies = vocab, copies

    def forward(self, x):
        b, t = x.shape
        logits = torch.zeros(b, t, self.vocab)
        if self.copies:
            for i in range(b):
                last = {}
                for j in range(t):
                    tok = int(x[i, j])
                    if tok in last:
                        logits[i, j, int(x[i, last[tok] + 1])] = 30.0
                    last[tok] = j
        return logits, None

    def get_normalized_probs(self, out, log_probs):
        return torch.log_softmax(out[0], -1)


def lm(name, model, limit=None):
    return Loaded(name, "", model, "lm", "none" if limit is None else "learned", limit, False)


def test_copy_probe_separates_a_perfect_copier_from_a_model_that_cannot():
    vocab = 3000
    stream = np.arange(4, 2004)  # every token distinct: the copy is the only way to predict a span
    models = [lm("copier", Copier(vocab)), lm("uniform", Copier(vocab, copies=False)),
              lm("short", Copier(vocab), limit=100)]
    res = copying.probe(models, stream, trained=64, longest=512, trials=3)
    assert res["span"] == 16 and res["gaps"] == [0, 16, 32, 64, 128, 256, 479]
    for p in res["models"]["copier"]:
        assert p["first"] == pytest.approx(np.log(vocab), rel=1e-4) and p["second"] < 1e-6 and p["ratio"] < 1e-6
    for p in res["models"]["uniform"]:
        assert p["ratio"] == pytest.approx(1.0)
    # learned positions that end at 100 tokens: gaps whose block is longer are not run
    assert [p is None for p in res["models"]["short"]] == [2 * 16 + d > 100 for d in res["gaps"]]
    # the blocks: [lead, span, gap, span], the gap being the text after the span
    rows = copying.blocks(stream, 16, 5, trials=2)
    assert rows.shape == (2, 38) and (rows[:, 1:17] == rows[:, 22:]).all() and (np.diff(rows[:, :22]) == 1).all()


def test_passkey_trials_are_deterministic_and_hold_the_key_once():
    d = dictionary(60)
    for w in [*map(str, range(10)), *passkey.CARRIER, "."]:
        d.add_symbol(w)
    vocab = passkey.vocabulary(d)
    assert len(vocab["digits"]) == 10 and len(vocab["carrier"]) == 4 and vocab["period"] is not None
    stream = np.arange(4, 54).repeat(20)  # filler without digits or carrier words
    a, b = (passkey.trials(stream, vocab, 128, n=5) for _ in range(2))
    assert all((x["prompt"] == y["prompt"]).all() and (x["key"] == y["key"]).all() for x, y in zip(a, b))
    other = passkey.trials(stream, vocab, 128, n=5, seed=passkey.SEED + 1)
    assert any((x["key"] != y["key"]).any() for x, y in zip(a, other))
    carrier = vocab["carrier"]
    for t in a:
        p = t["prompt"].tolist()
        assert len(p) == 128 and p[-4:] == carrier
        starts = [i for i in range(len(p) - 4) if p[i: i + 4] == carrier]
        assert len(starts) == 1  # the key is stated once
        assert p[starts[0] + 4: starts[0] + 4 + passkey.DIGITS] == t["key"].tolist()
    assert passkey.vocabulary(dictionary(60)) is None  # no digits: no probe


def t2r_lm(requested=None, **overrides):
    task = FakeTask(dictionary(40))
    task.args = type("Args", (), {"tokens_per_sample": requested})()
    return T2RTransformerLanguageModel.build_model(lm_args(max_target_positions=64, tokens_per_sample=64, **overrides),
                                                   task).eval()


def test_learned_positions_are_refused_past_their_table_and_sinusoidal_ones_extend():
    with pytest.raises(T2RUserError) as e:
        t2r_lm(requested=256, decoder_learned_pos=True)
    assert str(e.value).startswith("--tokens-per-sample 256 is longer than this model's 64 learned positions") \
        and "pass --tokens-per-sample 64 or less" in str(e.value)
    assert t2r_lm(requested=64, decoder_learned_pos=True).max_positions() == 64
    model = t2r_lm(requested=256)  # sinusoidal: runs past its 64 trained positions
    assert positions.kind(model.decoder) == "sinusoidal" and model.max_positions() == positions.EXTENDED
    x = torch.randint(4, 40, (1, 300))
    with torch.no_grad():
        lp, _ = score(model, x)
        state, table = {}, []
        for t in range(200):  # incremental decoding past the trained length: the table grows by doubling
            model.decoder(x[:, : t + 1], incremental_state=state)
            table.append(model.decoder.embed_positions.weights.size(0))
    assert torch.isfinite(lp).all() and lp.shape == (1, 299)
    assert len(set(table)) <= 4 and table[-1] >= 202
    assert positions.kind(t2r_lm(no_token_positional_embeddings=True).decoder) == "none"


def test_translation_buckets_and_documents_on_known_inputs():
    from fairseq_t2r.compare import translation

    lengths = [3, 5, 8, 9, 12, 20, 30, 41]
    ranges = translation.buckets(lengths)
    assert ranges[0][0] == 3 and ranges[-1][1] == 41
    assert sum(sum(lo <= n <= hi for n in lengths) for lo, hi in ranges) == len(lengths)  # each in exactly one
    eos = 2
    sents = [torch.tensor([10 + i, 20 + i, eos]) for i in range(5)]
    docs = translation.join(sents, 2, 10, eos)
    assert [d.tolist() for d in docs] == [[10, 20, 11, 21, 2], [12, 22, 13, 23, 2]]  # the fifth is left out
    # decoder positions = tokens + the leading eos: 15 tokens fill a 16-window, 16 do not
    outputs = [torch.zeros(n) for n in (15, 16, 31, 63, 64)]
    assert translation.within_windows(outputs) == {"16": 0.2, "32": 0.6, "64": 0.8}


def test_passkey_full_key_accuracy_is_greedy_decoding_s():
    """A copier solves every key in one forward; greedy decoding token by token agrees with it."""
    d = dictionary(40)
    for w in [*map(str, range(10)), *passkey.CARRIER, "."]:
        d.add_symbol(w)
    stream = np.arange(4, 40).repeat(10)
    model = lm("copier", Copier(len(d)))
    vocab = passkey.vocabulary(d)
    ts = passkey.trials(stream, vocab, 96, n=4, digits=1)  # one digit: the copier's last-occurrence rule is exact
    prompts = torch.as_tensor(np.stack([t["prompt"] for t in ts]))
    keys = torch.as_tensor(np.stack([t["key"] for t in ts]))
    forced = passkey.key_argmax(model.model, prompts, keys)
    greedy = model.model(prompts)[0][:, -1].argmax(-1, keepdim=True)
    assert (forced == keys).all() and (greedy == keys).all()
    res = passkey.probe([model, lm("uniform", Copier(len(d), copies=False))], stream, d, trained=40, n=3, digits=1)
    assert res["lengths"] == [40, 80, 160, 320] and all(p["accuracy"] == 1.0 for p in res["models"]["copier"])
    assert all(p["accuracy"] == 0.0 for p in res["models"]["uniform"])
