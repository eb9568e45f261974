"""fairseq-train's parse with --finetune-from-model: the options not given are the checkpoint's
(models/from_checkpoint.py), in process; the same through the real CLIs: tests/e2e/test_bad_input.py."""
from argparse import Namespace

import pytest
import torch
from fairseq import options
from fairseq.models import ARCH_CONFIG_REGISTRY
from utils import USER_DIR, lm_args, tiny_lm

from fairseq_t2r.convert import convert
from fairseq_t2r.errors import T2RUserError
from fairseq_t2r.models.conversion import fill_new_tensors


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A softmax LM (dim 32, 2 layers, 4 heads, ffn 48: not transformer_lm's defaults) converted
    with elu in layer 1 only."""
    root = tmp_path_factory.mktemp("from_checkpoint")
    torch.manual_seed(0)
    model = tiny_lm(t2r=False, decoder_ffn_embed_dim=48)
    args = lm_args(arch="transformer_lm", _name="transformer_lm", decoder_ffn_embed_dim=48)
    torch.save({"args": None, "cfg": {"model": dict(vars(args))}, "model": model.state_dict()}, root / "soft.pt")
    convert(str(root / "soft.pt"), str(root / "elu.pt"),
            {"t2r_feature_map": "elu", "t2r_feature_dim": 8, "t2r_layers": "1"})
    return root


def parse(root, *extra, arch="t2r_transformer_lm"):
    return options.parse_args_and_arch(options.get_training_parser(), [
        str(root), "--user-dir", USER_DIR, "--task", "language_modeling", "--arch", arch,
        "--finetune-from-model", str(root / "elu.pt"), *extra])


def test_options_not_given_are_the_checkpoints(converted):
    args = parse(converted)
    assert (args.decoder_layers, args.decoder_embed_dim, args.decoder_ffn_embed_dim, args.decoder_attention_heads) == (2, 32, 48, 4)
    assert (args.t2r_feature_map, args.t2r_feature_dim, args.t2r_layers) == ("elu", 8, "1")
    assert not hasattr(args, "t2r_trainable")  # a choice of this run, never taken from the checkpoint
    # regularisation stays the command line's: unset here, the model dataclass's 0.1 later (not the checkpoint's 0.0)
    assert not hasattr(args, "dropout")


def test_given_options_win_and_agreeing_t2r_options_are_accepted(converted):
    args = parse(converted, "--decoder-ffn-embed-dim", "64", "--t2r-layers", "1", "--t2r-feature-map", "elu",
                 "--dropout", "0.3")
    assert (args.decoder_ffn_embed_dim, args.t2r_layers, args.dropout, args.decoder_embed_dim) == (64, "1", 0.3, 32)


def test_another_architecture_of_the_family_is_refused(converted):
    """t2r_transformer_lm_gpt's defaults (768 wide, 12 layers) are not the checkpoint's; the generic
    t2r_transformer_lm takes everything from the checkpoint."""
    with pytest.raises(T2RUserError, match="--arch t2r_transformer_lm_gpt does not match .*elu.pt, a "
                                           "t2r_transformer_lm checkpoint .*: use --arch t2r_transformer_lm;"):
        parse(converted, arch="t2r_transformer_lm_gpt")


@pytest.mark.parametrize("extra, needle", [
    (["--t2r-feature-map", "t2r"], "--t2r-feature-map t2r contradicts .*elu.pt, converted with --t2r-feature-map elu"),
    (["--t2r-layers", "0,1"], "--t2r-layers 0,1 contradicts .*converted with --t2r-layers 1: leave --t2r-layers out"),
    (["--t2r-feature-dim", "16"], "--t2r-feature-dim 16 contradicts .*--t2r-feature-dim 8"),
])
def test_contradicting_t2r_option_is_refused(converted, extra, needle):
    with pytest.raises(T2RUserError, match=needle):
        parse(converted, *extra)
    args = parse(converted, *extra, "--t2r-reconvert")  # said deliberately: accepted
    assert args.t2r_reconvert


def test_a_saved_config_is_never_filled_from_its_finetuning_source(converted):
    """fairseq runs the architecture functions on saved configs too (translation models, at every
    load); those carry ``_name``, and their --finetune-from-model is history, not an instruction."""
    saved = Namespace(_name="t2r_transformer_lm_big", finetune_from_model=str(converted / "elu.pt"))
    ARCH_CONFIG_REGISTRY["t2r_transformer_lm_big"](saved)
    assert saved.decoder_layers == 12 and saved.t2r_feature_map == "t2r"


def test_reconvert_discards_only_feature_maps_that_do_not_fit():
    """--t2r-reconvert is saved in the finetuned checkpoint's cfg: loading that checkpoint (its own
    feature maps fit exactly) must keep them; a checkpoint with other maps gets fresh ones."""
    torch.manual_seed(0)
    own = tiny_lm(t2r=True, t2r_reconvert=True)
    trained = {k: v.clone() + 1 for k, v in own.state_dict().items()}
    fill_new_tensors(own, trained)
    assert torch.equal(trained["decoder.layers.0.self_attn.feature_map.weight"],
                       own.state_dict()["decoder.layers.0.self_attn.feature_map.weight"] + 1)
    other = tiny_lm(t2r=True, t2r_feature_dim=4).state_dict()  # another feature size: does not fit
    fill_new_tensors(own, other)
    assert torch.equal(other["decoder.layers.0.self_attn.feature_map.weight"],
                       own.state_dict()["decoder.layers.0.self_attn.feature_map.weight"])
    with pytest.raises(T2RUserError, match="tensor decoder.layers.0.self_attn.feature_map.weight has shape"):
        fill_new_tensors(tiny_lm(t2r=True), tiny_lm(t2r=True, t2r_feature_dim=4).state_dict())


def test_a_new_state_given_with_reconvert_takes_its_own_norm(converted):
    """A checkpoint that saved --t2r-norm sum (as every checkpoint did before the norm followed
    the state), finetuned as --t2r-state delta --t2r-reconvert: the delta rule's own norm, rms,
    not the checkpoint's sum, which it refuses; a state that takes sum keeps the checkpoint's."""
    convert(str(converted / "soft.pt"), str(converted / "sum.pt"),
            {"t2r_feature_map": "elu", "t2r_feature_dim": 8, "t2r_layers": "1", "t2r_norm": "sum"})
    argv = lambda *extra: options.parse_args_and_arch(options.get_training_parser(), [  # noqa: E731
        str(converted), "--user-dir", USER_DIR, "--task", "language_modeling", "--arch", "t2r_transformer_lm",
        "--finetune-from-model", str(converted / "sum.pt"), *extra])
    from fairseq_t2r.config import t2r_option

    assert t2r_option(argv("--t2r-state", "delta", "--t2r-reconvert"), "t2r_norm") == "rms"
    kept = argv("--t2r-state", "decay", "--t2r-reconvert")
    assert kept.t2r_norm == "sum" and t2r_option(kept, "t2r_norm") == "sum"
