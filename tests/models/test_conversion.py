"""The swap: a softmax checkpoint's tensors land bit-exactly in the T2R model; misfits stop
with one line and write nothing; t2r-convert reads both checkpoint formats and never overwrites."""
import hashlib
import os
from argparse import Namespace

import pytest
import torch
from fairseq.modules import MultiheadAttention
from tool_server import tools
from utils import lm_args, tiny_lm

from fairseq_t2r.convert import convert
from fairseq_t2r.errors import T2RUserError
from fairseq_t2r.modules import T2RAttention

OPTIONS = {"t2r_feature_map": "t2r", "t2r_feature_dim": 8, "t2r_layers": None}


def test_every_teacher_tensor_copied_bit_exactly():
    torch.manual_seed(0)
    teacher = tiny_lm(t2r=False)
    student = tiny_lm(t2r=True)
    student.load_state_dict(teacher.state_dict())
    got = student.state_dict()
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(got[name], tensor), name
    new = [k for k in got if k not in teacher.state_dict()]
    assert new and all(".feature_map." in k for k in new)


def test_mismatched_checkpoint_names_first_tensor_and_shapes():
    teacher = tiny_lm(t2r=False, decoder_ffn_embed_dim=48)
    student = tiny_lm(t2r=True)
    with pytest.raises(T2RUserError) as err:
        student.load_state_dict(teacher.state_dict())
    msg = str(err.value)
    assert "\n" not in msg
    assert "decoder.layers.0.fc1.weight" in msg and "(48, 32)" in msg and "(64, 32)" in msg


def test_checkpoint_with_fewer_layers_is_refused():
    teacher = tiny_lm(t2r=False, decoder_layers=1)
    student = tiny_lm(t2r=True, decoder_layers=2)
    with pytest.raises(T2RUserError, match="decoder.layers.1"):
        student.load_state_dict(teacher.state_dict())


def test_hybrid_keeps_softmax_in_unselected_layers():
    model = tiny_lm(t2r=True, decoder_layers=3, t2r_layers="1")
    kinds = [type(layer.self_attn) for layer in model.decoder.layers]
    assert kinds == [MultiheadAttention, T2RAttention, MultiheadAttention]


def test_layer_out_of_range_is_a_user_error():
    with pytest.raises(T2RUserError, match="--t2r-layers names layer 5"):
        tiny_lm(t2r=True, t2r_layers="0,5")


def save_softmax_checkpoint(path, prehydra):
    torch.manual_seed(0)
    model = tiny_lm(t2r=False)
    args = lm_args(arch="transformer_lm", _name="transformer_lm")
    if prehydra:
        state = {"args": args, "model": model.state_dict(), "extra_state": {}}
    else:
        state = {"args": None, "cfg": {"model": dict(vars(args))}, "model": model.state_dict()}
    torch.save(state, path)
    return model.state_dict()


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("prehydra", [True, False])
def test_convert_keeps_tensors_and_sets_twin_arch(tmp_path, prehydra):
    src, out = tmp_path / "soft.pt", tmp_path / "t2r.pt"
    teacher = save_softmax_checkpoint(src, prehydra)
    twin, copied, added = convert(str(src), str(out), OPTIONS)
    assert twin == "t2r_transformer_lm" and copied == len(teacher)
    state = torch.load(out, weights_only=False)
    for name, tensor in teacher.items():
        assert torch.equal(state["model"][name], tensor), name
    assert sorted(added) == sorted(k for k in state["model"] if k not in teacher)
    saved = state["args"] if prehydra else Namespace(**state["cfg"]["model"])
    assert saved.t2r_feature_dim == 8
    assert (saved.arch if prehydra else saved._name) == "t2r_transformer_lm"
    # the converted file builds and loads as a T2R model
    model = tiny_lm(t2r=True)
    model.load_state_dict(state["model"])


def test_convert_never_overwrites(tmp_path):
    src, out = tmp_path / "soft.pt", tmp_path / "t2r.pt"
    save_softmax_checkpoint(src, prehydra=True)
    before = sha(src)
    with pytest.raises(T2RUserError, match="is the input"):
        convert(str(src), str(src), OPTIONS, force=True)
    out.write_bytes(b"user data")
    with pytest.raises(T2RUserError, match="already exists"):
        convert(str(src), str(out), OPTIONS)
    assert sha(src) == before and out.read_bytes() == b"user data"
    assert sorted(os.listdir(tmp_path)) == ["soft.pt", "t2r.pt"]  # no temp file left behind


def test_convert_cli_errors_are_one_line(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(512))
    for args, needle in [
        ([tmp_path / "missing.pt", tmp_path / "o.pt"], "does not exist"),
        ([junk, tmp_path / "o.pt"], "not a readable fairseq checkpoint"),
    ]:
        res = tools().run("fairseq_t2r.convert", *args, check=False, threads=1)
        assert res.returncode != 0
        err_lines = [line for line in res.stderr.splitlines() if "fairseq_t2r: error" in line]
        assert len(err_lines) == 1 and needle in err_lines[0], res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "o.pt").exists()


def test_checkpoint_unpickled_before_fairseq_still_registers(tmp_path):
    """A full unpickle of a T2R checkpoint before fairseq is imported imports the package through
    its marker while fairseq is absent; fairseq's --user-dir import then finds the package in
    sys.modules and skips it. Registration and the patches must hold all the same: fairseq's
    loader (what ``from_pretrained`` and ``load_model_ensemble_and_task`` call) reads the
    checkpoint after a user's ``torch.load(..., weights_only=False)``, and its model is registered."""
    import subprocess
    import sys

    src, out = tmp_path / "soft.pt", tmp_path / "t2r.pt"
    save_softmax_checkpoint(src, prehydra=False)
    convert(str(src), str(out), OPTIONS)
    state = torch.load(out, weights_only=False)
    state["optimizer_history"] = [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
                                   "lr_scheduler_state": {}, "num_updates": 0}]
    state["extra_state"] = {"train_iterator": {"epoch": 1}}
    torch.save(state, out)  # (what fairseq-train writes beside the model; fairseq's loader needs it)
    plugin = os.path.dirname(os.path.dirname(os.path.abspath(__import__("fairseq_t2r").__file__)))
    code = (
        "import sys, torch\n"
        f"torch.load({str(out)!r}, weights_only=False)\n"
        "assert 'fairseq_t2r' in sys.modules and 'fairseq' not in sys.modules\n"
        "from argparse import Namespace\n"
        "from fairseq import checkpoint_utils, utils\n"
        "from fairseq.criterions import CRITERION_REGISTRY\n"
        "from fairseq.models import ARCH_MODEL_REGISTRY\n"
        f"utils.import_user_module(Namespace(user_dir={os.path.join(plugin, 'fairseq_t2r')!r}))\n"
        f"state = checkpoint_utils.load_checkpoint_to_cpu({str(out)!r})\n"
        "assert 't2r_attention_transfer' in CRITERION_REGISTRY\n"
        "print(ARCH_MODEL_REGISTRY[state['cfg']['model']['_name']].__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([plugin, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[-1] == "T2RTransformerLanguageModel"
