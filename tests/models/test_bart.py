"""The released families' stand-ins in-process (tests/release_models.py: BART for summarization,
mBART under translation_from_pretrained_bart, an M2M-100-style transformer under
translation_multi_simple_epoch; pre-hydra checkpoints trained a few steps with stock fairseq):
the swap is bit-exact and lists what it copied, beam-4 hypotheses are re-scored by one parallel
pass of the converted model, the decoding state does not grow with the generated length, BART's
classification heads survive, and ``BARTModel.from_pretrained(..., user_dir=...)`` samples text.
"""
import copy
import os
from argparse import Namespace

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.models import ARCH_MODEL_NAME_REGISTRY
from fairseq.modules import MultiheadAttention
from release_models import released, task_flags
from utils import USER_DIR, bit_equal, load_checkpoint

from fairseq_t2r.modules.t2r_attention import T2RAttention

FAMILIES = ["bart", "mbart", "m2m"]
TWINS = {"bart": "t2r_bart_large", "mbart": "t2r_mbart_large", "m2m": "t2r_transformer_wmt_en_de_big"}


@pytest.fixture(scope="module")
def rel():
    return released()


def release_task(family, data, *extra):
    """The task of the release's generation command line (fairseq-generate's own parser)."""
    argv = [*task_flags(family, data, generate=True), "--user-dir", USER_DIR, *extra]
    args = options.parse_args_and_arch(options.get_generation_parser(), argv)
    return tasks.setup_task(args)


def load(path, task, **overrides):
    (model,), _ = checkpoint_utils.load_model_ensemble([path], task=task, arg_overrides=overrides or None)
    return model.eval()


@pytest.fixture(scope="module")
def swapped(rel):
    """family -> (task, teacher model, swapped T2R model)."""
    out = {}
    for family in FAMILIES:
        task = release_task(family, rel["data"])
        heads = {"load_checkpoint_heads": True} if family == "bart" else {}  # as BARTModel.from_pretrained
        teacher = load(rel[family], task, **heads)
        torch.manual_seed(0)
        out[family] = (task, teacher, load(rel[family], task, arch=TWINS[family], **heads))
    return out


def test_twins_of_every_bart_architecture():
    base = sorted(a for a, m in ARCH_MODEL_NAME_REGISTRY.items() if m == "bart")
    assert {"bart_base", "bart_large", "mbart_large"} <= set(base)
    assert all(ARCH_MODEL_NAME_REGISTRY["t2r_" + a] == "t2r_bart" for a in base)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "x", "--user-dir", USER_DIR, "--task", "translation", "--arch", "t2r_mbart_large"])
    assert (args.encoder_embed_dim, args.layernorm_embedding, args.no_scale_embedding, args.share_all_embeddings,
            args.t2r_cross, args.t2r_feature_dim) == (1024, True, False, True, "softmax", 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_swap_copies_every_softmax_tensor_bit_exact(rel, swapped, family):
    _, teacher, model = swapped[family]
    original = load_checkpoint(rel[family])["model"]
    own = model.state_dict()
    copied = sorted(k for k in original if k in own)
    assert copied == sorted(original)  # every tensor of the checkpoint, nothing dropped
    assert all(bit_equal(own[k], original[k]) for k in copied), [k for k in copied if not bit_equal(own[k], original[k])]
    new = sorted(k for k in own if k not in original)
    layers = len(model.decoder.layers)
    assert new == [f"decoder.layers.{i}.self_attn.feature_map.{p}" for i in range(layers) for p in ("bias", "weight")]
    listed = {k.split(".layers.")[0] + (".layers." if ".layers." in k else "") for k in copied}
    assert "decoder.layernorm_embedding.weight" in copied and "encoder.layernorm_embedding.weight" in copied \
        if family != "m2m" else "decoder.layers." in listed
    # decoder self-attention is T2R; cross-attention and the whole encoder stay fairseq's softmax
    assert all(isinstance(layer.self_attn, T2RAttention) for layer in model.decoder.layers)
    assert all(type(layer.encoder_attn) is MultiheadAttention for layer in model.decoder.layers)
    assert not any(isinstance(m, T2RAttention) for m in model.encoder.modules())
    assert type(model).__name__ == ("T2RBARTModel" if family != "m2m" else "T2RTransformerModel")


def test_bart_classification_head_is_carried_over(rel, swapped):
    _, teacher, model = swapped["bart"]
    assert list(model.classification_heads) == ["mnli"]
    src = torch.tensor([[5, 6, 7, 8, teacher.eos]])
    prev = torch.tensor([[teacher.eos, 5, 6, 7, 8]])
    with torch.no_grad():  # the head reads the encoder-decoder's last eos state: the decoder is T2R now
        logits = model(src, torch.tensor([5]), prev, classification_head_name="mnli")[0]
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


def _generator(task, model, beam=4, **kw):
    args = Namespace(beam=beam, nbest=beam, max_len_a=0, max_len_b=12, min_len=1, **kw)
    return task.build_generator([model], args)


def _test_batch(task, n=6):
    if "test" not in task.datasets:  # (translation_multi_simple_epoch cannot load a split twice)
        task.load_dataset("test")
    itr = task.get_batch_iterator(task.dataset("test"), max_sentences=n, seed=1).next_epoch_itr(shuffle=False)
    return next(iter(itr))


@pytest.mark.parametrize("family", FAMILIES)
def test_beam4_hypotheses_are_rescored_by_the_converted_model(swapped, family):
    """fairseq's own inference step (language tokens as prefix or eos, as each task sets them),
    then every hypothesis's positional scores against one teacher-forced parallel pass (float64)."""
    task, _, model = swapped[family]
    model = copy.deepcopy(model).double()
    sample = _test_batch(task)
    gen = _generator(task, model)
    row = model.decoder.output_projection.weight[gen.eos].clone()
    with torch.no_grad():
        # the end of a sentence made likelier (or less likely) until hypotheses end at different steps
        for boost in (1.0, 0.5, 1.5, 0.25, 2.0, 0.0, 3.0, -0.25, 0.75, 1.25):
            model.decoder.output_projection.weight[gen.eos] = row * boost
            hypos = task.inference_step(gen, [model], sample)
            if len({len(h["tokens"]) for nbest in hypos for h in nbest}) > 1:
                break
        net = sample["net_input"]
        worst, lengths = 0.0, set()
        for i, nbest in enumerate(hypos):
            assert len(nbest) == 4
            for h in nbest:
                toks = h["tokens"]
                lengths.add(len(toks))
                prev = torch.cat([toks.new_tensor([gen.eos]), toks[:-1]])[None]
                out = model(net["src_tokens"][i:i + 1], net["src_lengths"][i:i + 1], prev)
                ref = model.get_normalized_probs(out, log_probs=True)[0].gather(-1, toks[:, None])[:, 0]
                # fairseq's log_softmax runs in float32 (utils.log_softmax) whatever the model's dtype:
                # the double model's scores agree to float32 rounding of the sum over the vocabulary
                err = (ref.double() - h["positional_scores"].double()).abs()
                assert (err <= ref.double().abs().clamp(min=1) * 1e-6).all(), (err.max().item(), family)
                worst = max(worst, err.max().item())
    assert len(lengths) > 1  # hypotheses finished at different steps: the batch shrank
    print(f"\n{family}: beam-4 re-scoring max |error| {worst:.1e} over {sum(len(n) for n in hypos)} hypotheses")


@pytest.mark.parametrize("family", FAMILIES)
def test_decoding_state_is_constant_in_the_generated_length(swapped, family):
    from fairseq_t2r.demo.measure import state_bytes

    task, _, model = swapped[family]
    net = _test_batch(task, n=3)["net_input"]
    prev = torch.randint(4, len(task.target_dictionary), (net["src_tokens"].size(0), 20),
                         generator=torch.Generator().manual_seed(0))
    sizes = []
    with torch.no_grad():
        enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
        state = {}
        for t in range(prev.size(1)):
            model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
            sizes.append(state_bytes(state))
    assert len(set(sizes)) == 1, sizes


def test_from_pretrained_and_sample(rel, tmp_path):
    """``BARTModel.from_pretrained`` on a t2r-convert output (fairseq's hub utils, user_dir=):
    fairseq's BARTHubInterface around the T2R model; sample() takes and returns text."""
    from fairseq.models.bart import BARTModel

    from fairseq_t2r.convert import convert

    convert(rel["bart"], str(tmp_path / "model.pt"), {"t2r_feature_dim": 16})
    bart = BARTModel.from_pretrained(str(tmp_path), checkpoint_file="model.pt",
                                     data_name_or_path=os.path.join(rel["data"], "cnn"), user_dir=USER_DIR,
                                     bpe="subword_nmt", bpe_codes=os.path.join(rel["data"], "bpe.codes"))
    bart.eval()
    assert type(bart.model).__name__ == "T2RBARTModel" and type(bart).__name__ == "BARTHubInterface"
    assert bart.model.decoder.layers[0].self_attn.feature_map.feature_dim == 16
    out = bart.sample(["Click the OK button to close the dialog.", "Choose Format - Cells."], beam=4, max_len_b=12,
                      no_repeat_ngram_size=3)
    assert len(out) == 2 and all(isinstance(t, str) and t.strip() and "@@" not in t for t in out), out
    # the hub's own scoring path (fill-in of a full pass) runs on the T2R model too
    assert torch.isfinite(bart.predict("mnli", bart.encode("Click OK.", "Close the dialog."))).all()


@pytest.mark.parametrize("arch, fmt", [("transformer_lm_gpt3_small", "cfg"), ("transformer_lm_gpt2_small", "args")])
def test_dense_lm_in_its_released_layout_swaps_bit_exact(rel, tmp_path, arch, fmt):
    """The GPT-style dense LMs: the stand-in trained under language_modeling and saved with a cfg
    (fairseq >= 0.10, as the MoE paper's dense LMs), and a GPT-2-style one with pre-hydra args:
    t2r-convert, then fairseq's loader builds the twin with every tensor copied."""
    from fairseq.models.transformer_lm import TransformerLanguageModel
    from release_models import release_args

    path = rel["lm"]
    if fmt == "args":
        args = release_args("lm", rel["data"], "--arch", arch, "--decoder-embed-dim", "32",
                            "--decoder-attention-heads", "4", "--decoder-layers", "2")
        model = tasks.setup_task(args).build_model(args)
        path = str(tmp_path / "gpt2.pt")
        torch.save({"args": args, "model": model.state_dict(), "extra_state": {}, "last_optimizer_state": None,
                    "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                                           "lr_scheduler_state": {"best": None}, "num_updates": 0}]}, path)
    from fairseq_t2r.convert import convert

    state = load_checkpoint(path)
    assert (state.get("args") is None) == (fmt == "cfg")
    assert convert(path, str(tmp_path / "t2r.pt"), {})[0] == "t2r_" + arch  # t2r-convert's twin
    (t2r,), _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "t2r.pt")])
    own, original = t2r.state_dict(), state["model"]
    assert sorted(k for k in original if k not in own) == []
    assert all(bit_equal(own[k], t) for k, t in original.items())
    assert sorted(k for k in own if k not in original) == [
        f"decoder.layers.{i}.self_attn.feature_map.{p}" for i in range(2) for p in ("bias", "weight")]
    assert isinstance(t2r, TransformerLanguageModel) and t2r.decoder.embed_tokens.embedding_dim == 32


def test_finetuning_a_bart_checkpoint_as_plain_transformer_is_refused_in_one_line(rel):
    """t2r_transformer would build a model without BART's heads and initialisation: the twin it is."""
    from fairseq_t2r.errors import T2RUserError

    argv = [*task_flags("bart", rel["data"]), "--user-dir", USER_DIR, "--arch", "t2r_transformer",
            "--finetune-from-model", rel["bart"]]
    with pytest.raises(T2RUserError, match="a bart_large checkpoint .*: use --arch t2r_bart_large") as e:
        options.parse_args_and_arch(options.get_training_parser(), argv)
    assert "\n" not in str(e.value)
