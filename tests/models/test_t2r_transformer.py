"""t2r_transformer in-process: registration and options, recurrent == parallel decoding with
cross-attention (left-padded sources, beam reorders, finished sentences dropped), constant
incremental state, beam search against parallel re-scoring, and the swap from a checkpoint in
the released pre-hydra format. Tiny random models only; the trained ones are in test_mt_e2e.py."""
import os

import pytest
import torch
from fairseq import checkpoint_utils, options, search, tasks
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_NAME_REGISTRY
from fairseq.sequence_generator import SequenceGenerator

import fairseq_t2r.models  # noqa: F401  (registers the models, applies patches)
from fairseq_t2r.errors import T2RUserError
from fairseq_t2r.modules.t2r_attention import T2RAttention

USER_DIR = os.path.dirname(os.path.abspath(fairseq_t2r.__file__))
TINY = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--dropout", "0"]
VOCAB = 60




@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A translation data dir with only a joined dictionary: enough to build task and model."""
    d = tmp_path_factory.mktemp("mt_dict")
    dictionary = Dictionary()
    for i in range(VOCAB - 4):
        dictionary.add_symbol(f"w{i}", n=VOCAB - i)
    for lang in ("en", "de"):
        dictionary.save(str(d / f"dict.{lang}.txt"))
    return str(d)


def parse(data_dir, *extra, arch="t2r_transformer"):
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, [
        data_dir, "--user-dir", USER_DIR, "--task", "translation", "-s", "en", "-t", "de",
        "--arch", arch, "--share-all-embeddings", *TINY, *extra])


def build(data_dir, *extra, arch="t2r_transformer", seed=1):
    args = parse(data_dir, *extra, arch=arch)
    task = tasks.setup_task(args)
    torch.manual_seed(seed)
    return args, task, task.build_model(args)


def left_padded_batch(dictionary, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), dictionary.pad())
    for b, n in enumerate(lengths):
        src[b, -n:-1] = torch.randint(dictionary.nspecial, len(dictionary), (n - 1,), generator=g)
        src[b, -1] = dictionary.eos()
    return src, torch.tensor(lengths)


def converted(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, T2RAttention)}


# --------------------------------------------------------------------------- registration / options

def test_twins_of_every_transformer_architecture():
    base = sorted(a for a, m in ARCH_MODEL_NAME_REGISTRY.items() if m == "transformer")
    assert "transformer_vaswani_wmt_en_de_big" in base
    for arch in base:
        assert ARCH_MODEL_NAME_REGISTRY["t2r_" + arch] == "t2r_transformer"


def test_twin_inherits_defaults_and_t2r_options(data_dir):
    args = parse(data_dir, arch="t2r_transformer_vaswani_wmt_en_de_big")
    assert args.encoder_embed_dim == 32 and args.dropout == 0  # command line wins
    big = options.parse_args_and_arch(options.get_training_parser(), [
        data_dir, "--user-dir", USER_DIR, "--task", "translation", "--arch",
        "t2r_transformer_vaswani_wmt_en_de_big", "--share-all-embeddings"])
    assert (big.encoder_embed_dim, big.decoder_attention_heads, big.dropout) == (1024, 16, 0.3)
    assert big.share_all_embeddings
    assert (big.t2r_feature_map, big.t2r_feature_dim, big.t2r_cross_feature_dim,
            big.t2r_cross, big.t2r_layers) == ("t2r", 32, None, "softmax", None)


def test_decoder_converted_encoder_kept(data_dir):
    _, _, model = build(data_dir, "--t2r-cross", "linear", "--t2r-feature-dim", "8", "--t2r-cross-feature-dim", "12")
    names = converted(model)
    assert sorted(names) == [f"decoder.layers.{i}.{a}" for i in (0, 1) for a in ("encoder_attn", "self_attn")]
    assert all(m.feature_map.feature_dim == (12 if n.endswith("encoder_attn") else 8) for n, m in names.items())
    assert model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight


def test_softmax_cross_by_default_and_layers(data_dir):
    _, _, model = build(data_dir)
    assert sorted(converted(model)) == ["decoder.layers.0.self_attn", "decoder.layers.1.self_attn"]
    _, _, model = build(data_dir, "--t2r-cross", "softmax", "--t2r-layers", "1")
    assert sorted(converted(model)) == ["decoder.layers.1.self_attn"]
    _, _, model = build(data_dir, "--t2r-cross", "linear", "--t2r-layers", "1")
    assert sorted(converted(model)) == ["decoder.layers.1.encoder_attn", "decoder.layers.1.self_attn"]
    with pytest.raises(T2RUserError, match="--t2r-layers"):
        build(data_dir, "--t2r-layers", "2")


def test_cross_feature_dim_with_softmax_cross_is_refused_in_one_line(data_dir):
    for cross in ((), ("--t2r-cross", "softmax")):
        with pytest.raises(T2RUserError, match="--t2r-cross-feature-dim 12 sizes linear cross-attention, but "
                                               "--t2r-cross is softmax: add --t2r-cross linear") as e:
            build(data_dir, *cross, "--t2r-cross-feature-dim", "12")
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- recurrent == parallel

def parallel_scores(model, src, src_lengths, prev):
    enc = model.encoder(src, src_lengths=src_lengths)
    out, _ = model.decoder(prev, encoder_out=enc)
    return out


@pytest.mark.parametrize("extra", [
    (),
    ("--t2r-cross", "linear"),
    ("--t2r-cross", "linear", "--t2r-cross-feature-dim", "6", "--t2r-feature-dim", "10"),
    ("--t2r-cross", "linear", "--t2r-layers", "0"),
    ("--t2r-cross", "linear", "--t2r-feature-map", "elu"),
], ids=["default-softmax-cross", "linear-cross", "cross-dim", "hybrid", "elu"])
def test_recurrent_equals_parallel_left_padded(data_dir, extra):
    _, task, model = build(data_dir, *extra)
    model.double().eval()
    d = task.source_dictionary
    src, src_lengths = left_padded_batch(d, [9, 3, 6, 1])
    assert task.cfg.left_pad_source  # fairseq's default, as the test intends
    prev = torch.randint(d.nspecial, len(d), (4, 11), generator=torch.Generator().manual_seed(3))
    prev[:, 0] = d.eos()
    with torch.no_grad():
        full = parallel_scores(model, src, src_lengths, prev)
        enc = model.encoder(src, src_lengths=src_lengths)
        state, steps = {}, []
        for t in range(prev.size(1)):
            out, _ = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
            steps.append(out)
    # fairseq's softmax attention, kept by --t2r-cross softmax / --t2r-layers, runs in float32
    all_t2r = len(converted(model)) == 2 * len(model.decoder.layers)
    tol = 1e-8 if all_t2r else 1e-6
    assert (full - torch.cat(steps, 1)).abs().max().item() <= tol
    # a padded source row must give the same output as the same sentence alone, unpadded
    with torch.no_grad():
        alone = parallel_scores(model, src[1:2, -3:], src_lengths[1:2], prev[1:2])
    assert (alone - full[1:2]).abs().max().item() <= tol


def test_recurrent_equals_parallel_under_beam_reorders(data_dir):
    """What SequenceGenerator does: set_beam_size, encoder out expanded to bsz*beam, the state
    reordered within sentences at every step and finished sentences dropped."""
    _, task, model = build(data_dir, "--t2r-cross", "linear")
    model.double().eval()
    beam = 3
    model.decoder.set_beam_size(beam)
    d = task.source_dictionary
    src, src_lengths = left_padded_batch(d, [7, 2, 5, 4], seed=5)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        expand = torch.arange(4).repeat_interleave(beam)
        enc = model.encoder.reorder_encoder_out(model.encoder(src, src_lengths=src_lengths), expand)
        rows_src, rows_len = src[expand], src_lengths[expand]
        hist = torch.full((4 * beam, 1), d.eos())
        state = {}
        for step in range(10):
            if step > 0:
                nsent = hist.size(0) // beam
                if step < 6:  # what beam search does: beams move within their sentence
                    keep = torch.arange(nsent)
                    if step in (3, 5):  # a sentence finished: drop it
                        keep = keep[keep != (1 if step == 3 else 0)]
                    perm = torch.stack([torch.randint(0, beam, (beam,), generator=g) for _ in keep])
                    order = (keep[:, None] * beam + perm).view(-1)
                else:  # any other order (rows no longer in whole sentences) must work too
                    order = torch.randint(0, hist.size(0), (5,), generator=g)
                model.decoder.reorder_incremental_state_scripting(state, order)
                enc = model.encoder.reorder_encoder_out(enc, order)
                hist, rows_src, rows_len = hist[order], rows_src[order], rows_len[order]
                new = torch.randint(d.nspecial, len(d), (hist.size(0), 1), generator=g)
                hist = torch.cat([hist, new], 1)
            # incremental decoding gets the full history; fairseq slices the last token itself
            out, _ = model.decoder(hist, encoder_out=enc, incremental_state=state)
            ref = parallel_scores(model, rows_src, rows_len, hist)[:, -1:]
            assert (out - ref).abs().max().item() <= 1e-8, step
            if step == 0:  # the source summary is kept once per sentence
                assert all(buf["Sz_src"].size(0) == 4 for buf in state.values() if "Sz_src" in buf)


@pytest.mark.parametrize("extra", [("--t2r-cross", "linear"), (), ("--t2r-cross", "linear", "--t2r-layers", "1")],
                         ids=["linear-cross", "softmax-cross", "hybrid"])
def test_stock_generator_sets_beam_size_and_stale_beam_is_safe(data_dir, extra):
    """SequenceGenerator calls model.set_beam_size for beams > 1 only: a beam-1 search after a
    beam-4 one sees a stale beam size 4 and must still give every sentence its own source.
    fairseq's softmax attention keeps beam size 1, as in the stock transformer (with 4 it
    would take every batch for whole beams and fail on the rescoring's one-row batches)."""
    from fairseq.modules import MultiheadAttention

    _, task, model = build(data_dir, *extra)
    model.eval()
    d = task.target_dictionary
    with torch.no_grad():  # make eos likely so that sentences finish at different steps
        model.decoder.embed_tokens.weight[d.eos()] *= 4
    src, src_lengths = left_padded_batch(d, [6, 4, 5, 3], seed=2)
    same = src[:1].expand(8, -1), src_lengths[:1].expand(8)

    def generate(beam, tokens, lengths, **kw):
        gen = SequenceGenerator([model], d, beam_size=beam, max_len_b=12, **kw)
        return gen.generate([model], {"net_input": {"src_tokens": tokens, "src_lengths": lengths}})

    def best(*args, **kw):
        return [h[0]["tokens"].tolist() for h in generate(*args, **kw)]

    with torch.no_grad():
        fresh, fresh_same = best(1, src, src_lengths), best(1, *same)
        best(4, src, src_lengths)
        assert {m.beam_size for m in converted(model).values()} == {4}
        assert {m.beam_size for m in model.modules() if type(m) is MultiheadAttention} == {1}
        assert best(1, src, src_lengths) == fresh  # distinct sources, stale beam size
        assert best(1, *same) == fresh_same  # identical sources: grouped, still right
        # sampled rows of one source diverge and finish at different steps: the grouped source
        # summary is then split per row; every sampled token keeps its parallel-form score
        torch.manual_seed(0)
        hypos = generate(1, *same, search_strategy=search.Sampling(d, sampling_topk=5))
        assert len({len(h[0]["tokens"]) for h in hypos}) > 1
        assert rescoring_max_diff(model, d, *same, hypos) <= 1e-4


def rescoring_max_diff(model, d, src, src_lengths, hypos):
    """max |positional score - score of one parallel forward pass| over all hypotheses."""
    worst = 0.0
    with torch.no_grad():
        for i, nbest in enumerate(hypos):
            for h in nbest:
                toks = h["tokens"]
                prev = torch.cat([toks.new_tensor([d.eos()]), toks[:-1]])[None]
                out = parallel_scores(model, src[i:i + 1], src_lengths[i:i + 1], prev)
                lp = model.get_normalized_probs((out, None), log_probs=True)[0]
                ref = lp.gather(-1, toks[:, None])[:, 0]
                worst = max(worst, (ref - h["positional_scores"]).abs().max().item())
    return worst


def decoding_gap_and_beam(model, d, beam_dtype=None):
    """The float64 checks every converted translation decoder gets: on five left-padded sources,
    the decoder's parallel output against token-by-token incremental decoding (max |difference|),
    then beam-4 search (in ``beam_dtype``, the model's own by default) with sentences finishing at
    different steps. -> (gap, src, src_lengths, hypos)."""
    src, src_lengths = left_padded_batch(d, [8, 3, 6, 5, 2], seed=11)
    model.double().eval()
    prev = torch.randint(d.nspecial, len(d), (5, 9), generator=torch.Generator().manual_seed(3))
    prev[:, 0] = d.eos()
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=src_lengths)
        full, _ = model.decoder(prev, encoder_out=enc)
        state, steps = {}, []
        for t in range(prev.size(1)):
            steps.append(model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)[0])
    gap = (full - torch.cat(steps, 1)).abs().max().item()
    if beam_dtype is not None:
        model.to(beam_dtype)
    with torch.no_grad():
        model.decoder.embed_tokens.weight[d.eos()] *= 4  # sentences finish at different steps
    gen = SequenceGenerator([model], d, beam_size=4, max_len_b=12, min_len=1)
    hypos = gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": src_lengths}})
    return gap, src, src_lengths, hypos


@pytest.mark.parametrize("cross", ["softmax", "linear"])
def test_incremental_state_does_not_grow_with_generated_tokens(data_dir, cross):
    """Per generated token the decoder does constant work in the target length: its state (T2R
    self-attention's S and z; the cross-attention's source summary, or softmax cross-attention's
    cache) has one size from the first step on. fairseq's encoder-decoder attention (static_kv)
    caches the encoder output's keys and values, projected once at the first step and reused."""
    from fairseq.modules import MultiheadAttention

    from fairseq_t2r.demo.measure import state_bytes

    _, task, model = build(data_dir, "--t2r-cross", cross)
    model.eval()
    d = task.source_dictionary
    src, src_lengths = left_padded_batch(d, [9, 4, 6], seed=4)
    prev = torch.randint(d.nspecial, len(d), (3, 16), generator=torch.Generator().manual_seed(9))
    prev[:, 0] = d.eos()
    cross_attns = [layer.encoder_attn for layer in model.decoder.layers]
    assert all(type(m) is (MultiheadAttention if cross == "softmax" else T2RAttention) for m in cross_attns)
    sizes, cached = [], []
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=src_lengths)
        state = {}
        for t in range(prev.size(1)):
            model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
            sizes.append(state_bytes(state))
            if cross == "softmax":
                cached.append([m._get_input_buffer(state)["prev_key"].data_ptr() for m in cross_attns])
    assert len(set(sizes)) == 1, sizes
    if cross == "softmax":
        assert all(c == cached[0] for c in cached)  # the first step's tensors, never recomputed
        x = enc["encoder_out"][0]  # (S, B, C)
        S, B, C = x.shape
        for m in cross_attns:
            buf = m._get_input_buffer(state)
            assert set(buf) == {"prev_key", "prev_value", "prev_key_padding_mask"}
            for name, proj in (("prev_key", m.k_proj), ("prev_value", m.v_proj)):
                want = proj(x).view(S, B, m.num_heads, m.head_dim).permute(1, 2, 0, 3)  # (B, H, S, D)
                assert torch.equal(buf[name], want), name
            assert torch.equal(buf["prev_key_padding_mask"], enc["encoder_padding_mask"][0])


# --------------------------------------------------------------------------- beam search

@pytest.mark.parametrize("cross", ["linear", "softmax"])
def test_beam_hypotheses_match_parallel_rescoring(data_dir, cross):
    _, task, model = build(data_dir, "--t2r-cross", cross)
    model.eval()
    d = task.target_dictionary
    with torch.no_grad():  # make eos likely so that sentences finish at different steps
        model.decoder.embed_tokens.weight[d.eos()] *= 4
    src, src_lengths = left_padded_batch(d, [8, 3, 6, 5, 2], seed=11)
    gen = SequenceGenerator([model], d, beam_size=4, max_len_b=12, min_len=1)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}
    hypos = gen.generate([model], sample)
    assert {m.beam_size for m in converted(model).values()} == {4}  # set by the generator
    assert all(len(nbest) == 4 for nbest in hypos)
    # finished hypotheses at different steps, i.e. the batch shrank
    assert len({len(h["tokens"]) for nbest in hypos for h in nbest}) > 1
    assert rescoring_max_diff(model, d, src, src_lengths, hypos) <= 1e-4


# --------------------------------------------------------------------------- pre-hydra checkpoint

def _prehydra_checkpoint(data_dir, path, stacked_in_proj=False):
    args, task, model = build(data_dir, arch="transformer_wmt_en_de", seed=5)
    assert not any(k.startswith("t2r_") for k in vars(args))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if stacked_in_proj:  # fairseq < 0.9 stored q, k, v as one in_proj tensor
        for prefix in [k[: -len("q_proj.weight")] for k in list(sd) if k.endswith("q_proj.weight")]:
            for kind in ("weight", "bias"):
                sd[prefix + "in_proj_" + kind] = torch.cat(
                    [sd.pop(f"{prefix}{p}_proj.{kind}") for p in "qkv"], 0)
    torch.save({
        "args": args,  # an argparse.Namespace: the released format has no "cfg"
        "model": sd,
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": 3.5}, "num_updates": 1000}],
        "extra_state": {"epoch": 3, "val_loss": 3.5},
        "last_optimizer_state": None,
    }, path)
    return model.state_dict()


@pytest.mark.parametrize("stacked", [False, True], ids=["qkv", "in_proj"])
def test_swap_prehydra_checkpoint_bit_exact(data_dir, tmp_path, stacked):
    path = str(tmp_path / "released.pt")
    original = _prehydra_checkpoint(data_dir, path, stacked_in_proj=stacked)
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [path], arg_overrides={"arch": "t2r_transformer_wmt_en_de", "data": data_dir, "t2r_cross": "linear"})
    model = models[0]
    assert type(model).__name__ == "T2RTransformerModel"
    assert model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    new_sd = model.state_dict()
    new = sorted(k for k in new_sd if k not in original)
    assert new and all(".feature_map." in k for k in new)
    assert len(new) == 2 * 2 * 2  # (weight, bias) x (self, cross) x 2 layers
    for k, t in original.items():
        assert torch.equal(new_sd[k], t), k
    assert sorted(converted(model)) == [f"decoder.layers.{i}.{a}" for i in (0, 1) for a in ("encoder_attn", "self_attn")]


def test_default_swap_converts_self_attention_only_bit_exact(data_dir, tmp_path):
    """--t2r-cross softmax (the default): the cross-attention modules stay fairseq's
    MultiheadAttention holding the teacher's tensors bit for bit; only self-attention gets new ones."""
    from fairseq.modules import MultiheadAttention

    path = str(tmp_path / "released.pt")
    original = _prehydra_checkpoint(data_dir, path)
    (model,), _ = checkpoint_utils.load_model_ensemble(
        [path], arg_overrides={"arch": "t2r_transformer_wmt_en_de", "data": data_dir})
    new_sd = model.state_dict()
    new = sorted(k for k in new_sd if k not in original)
    assert len(new) == 2 * 2 and all(".self_attn.feature_map." in k for k in new)  # (weight, bias) x 2 layers
    assert sorted(converted(model)) == ["decoder.layers.0.self_attn", "decoder.layers.1.self_attn"]
    for i, layer in enumerate(model.decoder.layers):
        assert type(layer.encoder_attn) is MultiheadAttention
        own = {k: t for k, t in original.items() if k.startswith(f"decoder.layers.{i}.encoder_attn.")}
        assert len(own) == 8  # q, k, v, out projections: weight and bias
        for k, t in own.items():
            assert torch.equal(new_sd[k], t), k


def _legacy_checkpoint(data_dir, path, no_cross, fmt):
    """A T2R checkpoint as saved before --t2r-cross: its config records only ``t2r_no_cross``
    (False: linear cross-attention, whose feature maps it holds)."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    args, _, model = build(data_dir, "--t2r-cross", "softmax" if no_cross else "linear", "--t2r-feature-dim", "6",
                           arch="t2r_transformer_tiny")
    del args.t2r_cross
    args.t2r_no_cross = no_cross
    if no_cross:  # the old option ignored a cross size next to --t2r-no-cross; such a file must still load
        args.t2r_cross_feature_dim = 10
    state = {"model": model.state_dict(), "extra_state": {},
             "optimizer_history": [{"criterion_name": "x", "optimizer_name": "x",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}]}
    if fmt == "cfg":
        cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(args))
        assert "t2r_no_cross" in cfg["model"] and "t2r_cross" not in cfg["model"]
        state.update(cfg=cfg, args=None)
    else:
        state["args"] = args
    torch.save(state, path)
    return model.state_dict()


@pytest.mark.parametrize("fmt", ["cfg", "args"])
@pytest.mark.parametrize("no_cross, cross", [(False, "linear"), (True, "softmax")])
def test_checkpoint_saved_with_t2r_no_cross_loads_as_it_was(data_dir, tmp_path, fmt, no_cross, cross):
    from fairseq.modules import MultiheadAttention

    path = str(tmp_path / "legacy.pt")
    saved = _legacy_checkpoint(data_dir, path, no_cross, fmt)
    (model,), cfg = checkpoint_utils.load_model_ensemble([path], arg_overrides={"data": data_dir})
    assert cfg.model.t2r_cross == cross
    want_type = T2RAttention if cross == "linear" else MultiheadAttention
    assert all(type(layer.encoder_attn) is want_type for layer in model.decoder.layers)
    assert all(isinstance(layer.self_attn, T2RAttention) for layer in model.decoder.layers)
    assert model.state_dict().keys() == saved.keys()
    for k, t in saved.items():
        assert torch.equal(model.state_dict()[k], t), k
    # fairseq-train --finetune-from-model takes the checkpoint's cross-attention, not today's default
    args = parse(data_dir, "--finetune-from-model", path, arch="t2r_transformer")
    assert args.t2r_cross == cross


def test_swap_wrong_size_one_line_error(data_dir, tmp_path):
    path = str(tmp_path / "released.pt")
    _prehydra_checkpoint(data_dir, path)
    with pytest.raises(T2RUserError, match="does not fit --arch t2r_transformer_wmt_en_de: tensor decoder.layers.0.fc1.weight"):
        checkpoint_utils.load_model_ensemble(
            [path], arg_overrides={"arch": "t2r_transformer_wmt_en_de", "data": data_dir,
                                   "decoder_ffn_embed_dim": 48})


def test_t2r_options_saved_and_restored(data_dir, tmp_path):
    """A T2R checkpoint (current cfg format, as fairseq-train writes it) rebuilds with its own
    --t2r-* options, whatever the defaults."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args, _, model = build(data_dir, "--t2r-cross", "linear", "--t2r-feature-dim", "6", "--t2r-cross-feature-dim", "10",
                           "--t2r-layers", "1", "--t2r-feature-map", "hedgehog", arch="t2r_transformer_tiny")
    path = str(tmp_path / "t2r.pt")
    torch.save({"cfg": convert_namespace_to_omegaconf(args), "model": model.state_dict(),
                "optimizer_history": [{"criterion_name": "x", "optimizer_name": "x",
                                       "lr_scheduler_state": {"best": None}, "num_updates": 0}],
                "extra_state": {}, "args": None}, path)
    (loaded,), cfg = checkpoint_utils.load_model_ensemble([path])
    mods = converted(loaded)
    assert sorted(mods) == ["decoder.layers.1.encoder_attn", "decoder.layers.1.self_attn"]
    assert mods["decoder.layers.1.self_attn"].feature_map.feature_dim == 6
    assert mods["decoder.layers.1.encoder_attn"].feature_map.feature_dim == 10
    assert type(mods["decoder.layers.1.self_attn"].feature_map).__name__ == "HedgehogFeatureMap"
    for k, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], t), k
