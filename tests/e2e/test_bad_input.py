"""User mistakes through the real command-line tools (fairseq-train with --user-dir,
fairseq-eval-lm, t2r-convert): each stops with one line 'fairseq_t2r: error: ...' naming the
problem and the fix, a non-zero exit status, no traceback, and writes nothing.

The runs go through tests/tool_server.py (fork of a process that has imported fairseq, then
``python -m TOOL ARGS`` semantics): ~1.5 s per run instead of ~6 s. All cases of the module are
started together (a few at a time) by the ``results`` fixture; each test checks one case.
"""
import hashlib
import random

import pytest
import torch
from tool_server import TINY_MODEL, TINY_TRAIN, USER_DIR, tools

T2R = ["--user-dir", USER_DIR, "--arch", "t2r_transformer_lm", *TINY_TRAIN, "--max-update", "1"]
EVAL = ["--user-dir", USER_DIR, "--tokens-per-sample", "32", "--max-tokens", "256"]


def translation_checkpoint(root, lm):
    """A tiny softmax translation transformer (pre-hydra format, untrained) and a data directory
    with only its dictionaries (the LM corpus's): enough for every tool to reach the model."""
    import shutil

    from fairseq import options, tasks
    from utils import USER_DIR as user_dir

    dicts = root / "mt_dicts"
    dicts.mkdir()
    for lang in ("en", "de"):
        shutil.copy(f"{lm['data']}/dict.txt", dicts / f"dict.{lang}.txt")
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(dicts), "--user-dir", user_dir, "--task", "translation", "-s", "en", "-t", "de", "--arch", "transformer",
        "--share-all-embeddings", "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"])
    model = tasks.setup_task(args).build_model(args)
    history = [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 9.9}, "num_updates": 1}]
    torch.save({"args": args, "model": model.state_dict(), "optimizer_history": history, "extra_state": {},
                "last_optimizer_state": None}, root / "mt.pt")
    return dicts, root / "mt.pt"


FROM_ELU = [USER_DIR, "--arch", "t2r_transformer_lm", *TINY_TRAIN, "--max-update", "1"]  # no model flags


@pytest.fixture(scope="module")
def w(tmp_path_factory, tiny_lm_teacher):
    """Inputs: the shared softmax teacher, an lstm_lm checkpoint, a T2R checkpoint finetuned by
    fairseq-train, one written by t2r-convert (and one converted with elu in layer 0 only, and the
    two finetuned from it without model flags, and with --t2r-reconvert), a tiny translation
    checkpoint and its T2R conversion, a truncated checkpoint and random bytes."""
    lm = tiny_lm_teacher
    root = tmp_path_factory.mktemp("bad_input")
    server = tools()
    mt_dicts, mt = translation_checkpoint(root, lm)
    server.run("fairseq_t2r.convert", lm["teacher"], root / "converted_elu.pt", "--t2r-feature-map", "elu",
               "--t2r-layers", "0", cwd=root, threads=1)
    from_elu = {name: server.start("fairseq_cli.train", lm["data"], "--user-dir", *FROM_ELU, *extra, "--finetune-from-model",
                                   root / "converted_elu.pt", "--save-dir", root / name, cwd=root, threads=1)
                for name, extra in (("ft_elu", []), ("ft_reconvert", ["--t2r-reconvert", "--t2r-feature-map", "t2r"]))}
    lstm = server.start(
        "fairseq_cli.train", lm["data"], "--arch", "lstm_lm", "--decoder-layers", "1", "--decoder-embed-dim", "32",
        "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32", *TINY_TRAIN, "--max-update", "1",
        "--save-dir", root / "lstm", cwd=root, threads=1)
    finetuned = server.start("fairseq_cli.train", lm["data"], *T2R, *TINY_MODEL, "--finetune-from-model",
                             lm["teacher"], "--save-dir", root / "t2r", cwd=root, threads=1)
    server.run("fairseq_t2r.convert", lm["teacher"], root / "converted.pt", cwd=root, threads=1)
    server.run("fairseq_t2r.convert", mt, root / "mt_t2r.pt", cwd=root, threads=1)
    blob = open(lm["teacher"], "rb").read()
    (root / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    (root / "junk.pt").write_bytes(random.Random(0).randbytes(4096))
    (root / "existing.pt").write_bytes(b"somebody's file")
    lstm.wait(check=True)
    finetuned.wait(check=True)
    return {
        "root": root, "data": lm["data"], "teacher": lm["teacher"], "lstm": root / "lstm" / "checkpoint_last.pt",
        "finetuned": root / "t2r" / "checkpoint_last.pt", "converted": root / "converted.pt",
        "truncated": root / "truncated.pt", "junk": root / "junk.pt", "existing": root / "existing.pt",
        "converted_elu": root / "converted_elu.pt", "mt": mt, "mt_t2r": root / "mt_t2r.pt", "mt_dicts": mt_dicts,
        **{name: job.wait(check=True) for name, job in from_elu.items()},
    }


def train(w, *extra, model=TINY_MODEL):
    return ("fairseq_cli.train", [w["data"], *T2R, *model, *extra, "--save-dir", "ckpt"])


def eval_lm(w, path, user_dir=True):
    return ("fairseq_cli.eval_lm", [w["data"], *(EVAL if user_dir else EVAL[2:]), "--path", path])


def convert(*args):
    return ("fairseq_t2r.convert", [*args])


def train_arch(w, arch, *extra, task="language_modeling"):
    """fairseq-train with another --arch or --task than train()'s, no model flags."""
    flags = list(TINY_TRAIN)
    flags[flags.index("--task") + 1] = task
    if task != "language_modeling":  # an LM task option
        i = flags.index("--tokens-per-sample")
        del flags[i:i + 2]
    return ("fairseq_cli.train", [w["data"], "--user-dir", USER_DIR, "--arch", arch, *flags, "--max-update", "1",
                                  *extra, "--save-dir", "ckpt"])


def resized(option, value):
    model = list(TINY_MODEL)
    model[model.index(option) + 1] = value
    return model


# name -> (w -> (module, args), substrings the one error line must contain)
USER_ERRORS = {
    # checkpoint paths that do not exist
    "train_finetune_missing": (lambda w: train(w, "--finetune-from-model", "missing.pt"),
                               ["--finetune-from-model missing.pt does not exist"]),
    "train_restore_missing": (lambda w: train(w, "--restore-file", "missing.pt", "--reset-optimizer"),
                              ["--restore-file missing.pt does not exist", "from scratch"]),
    "eval_missing": (lambda w: eval_lm(w, "missing.pt"), ["checkpoint missing.pt does not exist", "--path"]),
    # files that are not checkpoints
    "train_truncated": (lambda w: train(w, "--finetune-from-model", w["truncated"]),
                        ["truncated.pt is not a readable fairseq checkpoint", "pass a .pt file"]),
    # (t2r-convert on missing files and random bytes: tests/models/test_conversion.py)
    "eval_random_bytes": (lambda w: eval_lm(w, w["junk"]), ["junk.pt is not a readable fairseq checkpoint"]),
    "convert_truncated": (lambda w: convert(w["truncated"], "out.pt"), ["is not a readable fairseq checkpoint"]),
    # sizes that do not fit the t2r_ architecture
    "train_more_layers": (lambda w: train(w, "--finetune-from-model", w["teacher"], model=resized("--decoder-layers", "3")),
                          ["does not fit --arch t2r_transformer_lm", "decoder.layers.2.",
                           # the exact flags that rebuild the checkpoint
                           "--arch t2r_transformer_lm --decoder-embed-dim 32", "--decoder-layers 2 ",
                           "--share-decoder-input-output-embed rebuilds", "leave the size flags out"]),
    # the model family and architecture of the --finetune-from-model checkpoint, checked before the build
    "train_lm_arch_from_translation": (lambda w: train(w, "--finetune-from-model", w["mt"]),
                                       ["mt.pt is a translation checkpoint (arch transformer)",
                                        "use --task translation --arch t2r_transformer"]),
    "train_translation_arch_from_lm": (lambda w: train_arch(w, "t2r_transformer", "--finetune-from-model", w["teacher"],
                                                            task="translation"),
                                       ["is a language-model checkpoint (arch transformer_lm)",
                                        "use --task language_modeling --arch t2r_transformer_lm"]),
    "train_wiki103_arch_on_plain_lm": (lambda w: train_arch(w, "t2r_transformer_lm_wiki103", "--finetune-from-model",
                                                            w["teacher"]),
                                       ["--arch t2r_transformer_lm_wiki103 does not match", "adaptive input",
                                        "use --arch t2r_transformer_lm"]),
    # a T2R option that contradicts the converted checkpoint's (elu, layer 0 only)
    "train_contradicts_converted_map": (lambda w: train_arch(w, "t2r_transformer_lm", "--t2r-feature-map", "t2r",
                                                             "--finetune-from-model", w["converted_elu"]),
                                        ["--t2r-feature-map t2r contradicts", "converted with --t2r-feature-map elu",
                                         "leave --t2r-feature-map out", "--t2r-reconvert"]),
    "train_contradicts_converted_layers": (lambda w: train(w, "--t2r-layers", "1", "--finetune-from-model",
                                                           w["converted_elu"]),
                                           ["--t2r-layers 1 contradicts", "converted with --t2r-layers 0"]),
    # a model of one family under the other family's task (the tools build it from the checkpoint)
    "eval_lm_translation_checkpoint": (lambda w: eval_lm(w, w["mt_t2r"]),
                                       ["this is a translation model (arch t2r_transformer)", "--task translation",
                                        "fairseq-eval-lm scores language models only"]),
    "eval_lm_softmax_translation_checkpoint": (lambda w: eval_lm(w, w["mt"]),
                                               ["mt.pt is a translation checkpoint (arch transformer)",
                                                "builds a language-model model",
                                                "use fairseq-generate (--task translation)"]),
    "generate_lm_checkpoint_as_translation": (
        lambda w: ("fairseq_cli.generate", [w["mt_dicts"], "--user-dir", USER_DIR, "--task", "translation", "-s", "en",
                                            "-t", "de", "--path", w["converted"], "--cpu"]),
        ["this is a language model (arch t2r_transformer_lm)", "use --task language_modeling"]),
    # not a transformer
    "train_from_lstm": (lambda w: train(w, "--finetune-from-model", w["lstm"]),
                        ["not a fairseq transformer", "decoder.layers.0.weight_ih", "transformer_lm and transformer"]),
    "convert_lstm": (lambda w: convert(w["lstm"], "out.pt"), ["arch 'lstm_lm' is not a fairseq transformer_lm"]),
    # feature sizes
    "train_feature_dim_zero": (lambda w: train(w, "--t2r-feature-dim", "0"), ["feature size must be positive, got 0"]),
    "convert_feature_dim_zero": (lambda w: convert(w["teacher"], "out.pt", "--t2r-feature-dim", "0"),
                                 ["feature sizes must be positive"]),
    # layers
    "train_layer_out_of_range": (lambda w: train(w, "--t2r-layers", "0,5"),
                                 ["--t2r-layers names layer 5, but the decoder has 2 layers (0..1)"]),
    "convert_layer_out_of_range": (lambda w: convert(w["teacher"], "out.pt", "--t2r-layers", "9"),
                                   ["--t2r-layers names layer 9"]),
    # t2r-convert never writes over its input or an existing file
    "convert_onto_input": (lambda w: convert(w["teacher"], w["teacher"], "--force"), ["is the input checkpoint"]),
    "convert_onto_existing": (lambda w: convert(w["teacher"], w["existing"]), ["already exists", "--force"]),
}
ARGPARSE_ERRORS = {  # rejected by argparse itself: usage + one error line, exit status 2
    "train_unknown_feature_map": lambda w: train(w, "--t2r-feature-map", "softmax"),
    "convert_unknown_feature_map": lambda w: convert(w["teacher"], "out.pt", "--t2r-feature-map", "softmax"),
}
WITHOUT_USER_DIR = {  # fairseq's own failure (a traceback), which must now name the plugin
    "eval_converted_without_user_dir": lambda w: eval_lm(w, w["converted"], user_dir=False),
    "eval_finetuned_without_user_dir": lambda w: eval_lm(w, w["finetuned"], user_dir=False),
}

# Where fairseq loads with weights_only=False (torch < 2.6, fairseq's main branch), the marker
# imports the installed plugin while unpickling: the T2R checkpoint loads without --user-dir.
FULL_UNPICKLE_EVAL = """
import functools, runpy, sys, torch
torch.load = functools.partial(torch.load, weights_only=False)
assert "fairseq_t2r" not in sys.modules
sys.argv = ["fairseq-eval-lm", *sys.argv[1:]]
runpy.run_module("fairseq_cli.eval_lm", run_name="__main__")
"""


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def results(w):
    """Run every case (3 at a time), each in its own empty working directory."""
    inputs = [w[k] for k in ("teacher", "lstm", "finetuned", "converted", "truncated", "junk", "existing",
                             "converted_elu", "mt", "mt_t2r")]
    before = {p: sha(p) for p in inputs}
    (w["root"] / "full_unpickle.py").write_text(FULL_UNPICKLE_EVAL)
    cases = {name: spec(w) for name, (spec, _) in USER_ERRORS.items()}
    cases.update({name: spec(w) for name, spec in {**ARGPARSE_ERRORS, **WITHOUT_USER_DIR}.items()})
    cases["eval_finetuned_full_unpickle"] = (None, [*eval_lm(w, w["finetuned"], user_dir=False)[1]])
    server, pending, out = tools(), [], {}
    for name, (module, args) in cases.items():
        cwd = w["root"] / "cases" / name
        cwd.mkdir(parents=True)
        script = w["root"] / "full_unpickle.py" if module is None else None
        pending.append((name, cwd, server.start(module, *args, cwd=cwd, script=script, threads=1)))
        while len(pending) >= 3 or (pending and len(out) + len(pending) == len(cases)):
            name_, cwd_, job = pending.pop(0)
            res = job.wait(timeout=120)
            res.written = sorted(str(p.relative_to(cwd_)) for p in cwd_.rglob("*") if p.is_file())
            out[name_] = res
    out["_inputs_changed"] = [str(p) for p in inputs if sha(p) != before[p]]
    return out


def assert_one_line_error(res, needles):
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = res.error_lines()
    assert len(errors) == 1, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == errors[0]  # the last thing the user sees
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert ": " in errors[0][len("fairseq_t2r: error: "):]  # problem, then what to do


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_error_is_one_line_and_writes_nothing(results, case):
    res = results[case]
    assert_one_line_error(res, USER_ERRORS[case][1])
    assert res.written == [], res.written  # no checkpoint, no output, no temp file


@pytest.mark.parametrize("case", sorted(ARGPARSE_ERRORS))
def test_unknown_feature_map_rejected_by_argparse(results, case):
    res = results[case]
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "error: argument --t2r-feature-map: invalid choice: 'softmax'" in last
    assert all(m in last for m in ("'elu'", "'hedgehog'", "'performer'", "'rfa'", "'t2r'"))
    assert res.written == []


def test_no_input_file_was_changed(results):
    assert results["_inputs_changed"] == []


@pytest.mark.parametrize("case", sorted(WITHOUT_USER_DIR))
def test_t2r_checkpoint_without_user_dir_names_the_plugin(results, case):
    """Without --user-dir fairseq used to fail with a bare KeyError: '_name'. Every T2R
    checkpoint (t2r-convert's and fairseq-train's) now carries fairseq_t2r.errors.RequiresUserDir,
    which fairseq's weights-only torch.load refuses by name. Still fairseq's traceback: the
    plugin is not loaded, so it cannot shorten it."""
    res = results[case]
    assert res.returncode != 0
    assert "Unsupported global: GLOBAL fairseq_t2r.errors.RequiresUserDir" in res.stderr
    assert "KeyError" not in res.stderr


def test_t2r_checkpoint_loads_without_user_dir_where_fairseq_unpickles_fully(results):
    res = results["eval_finetuned_full_unpickle"]
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Perplexity" in res.output


def test_killed_convert_leaves_no_partial_output(tmp_path):
    """SIGSTOP t2r-convert while it writes (a 26 MB checkpoint), check, SIGKILL it: the output
    path never holds a partial file; the next run cleans the dead run's temp file and succeeds."""
    import signal
    import time

    from utils import lm_args, tiny_lm

    torch.manual_seed(0)
    big = tiny_lm(t2r=False, vocab=100_000)
    src, out = tmp_path / "softmax.pt", tmp_path / "t2r.pt"
    torch.save({"args": lm_args(arch="transformer_lm"), "model": big.state_dict(), "extra_state": {}}, src)
    job = tools().start("fairseq_t2r.convert", src, out, "--t2r-feature-dim", "8", cwd=tmp_path, threads=1)
    deadline = time.monotonic() + 60
    temps = []
    while not temps and time.monotonic() < deadline:
        temps = list(tmp_path.glob("t2r.pt.tmp-*"))
        time.sleep(0.001)
    job.kill(signal.SIGSTOP)
    assert temps, "t2r-convert never started writing"
    mid_write = not out.exists()
    job.kill(signal.SIGKILL)
    res = job.wait()
    assert res.returncode == -signal.SIGKILL
    if mid_write:  # (if the write had already finished, the output must be complete)
        assert not out.exists() and list(tmp_path.glob("t2r.pt.tmp-*"))
    tools().run("fairseq_t2r.convert", src, out, "--t2r-feature-dim", "8", "--force", cwd=tmp_path, threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["softmax.pt", "t2r.pt"]
    state = torch.load(out, weights_only=False)
    assert torch.equal(state["model"]["decoder.embed_tokens.weight"], big.state_dict()["decoder.embed_tokens.weight"])


# ------------------------------------------------------------------ what a converted checkpoint remembers
def load_finetuned(w, name):
    """(model as every loading tool builds it from the checkpoint's own cfg, saved model cfg)."""
    from fairseq import checkpoint_utils
    from utils import load_checkpoint

    import fairseq_t2r.models  # noqa: F401  registers the models

    path = str(w["root"] / name / "checkpoint_last.pt")
    models, _ = checkpoint_utils.load_model_ensemble([path], arg_overrides={"data": w["data"]})
    return models[0], load_checkpoint(path)["cfg"]["model"]


def test_finetune_without_flags_trains_the_converted_model(w):
    """t2r-convert --t2r-feature-map elu --t2r-layers 0, then fairseq-train --finetune-from-model
    with no model flag at all: the elu map in layer 0 only, the teacher's sizes, said in one log
    line; the finetuned checkpoint records them, and loading it (fairseq-eval-lm/-generate,
    from_pretrained) builds that model again."""
    from fairseq.modules import MultiheadAttention

    from fairseq_t2r.modules import T2RAttention

    log = w["ft_elu"].output
    took = [line for line in log.splitlines() if "model options from --finetune-from-model" in line]
    assert len(took) == 1, log[-3000:]
    for flag in ("--t2r-feature-map elu", "--t2r-layers 0", "--decoder-layers 2", "--decoder-embed-dim 32",
                 "--decoder-ffn-embed-dim 64", "--decoder-attention-heads 4", "--share-decoder-input-output-embed"):
        assert flag in took[0], (flag, took[0])
    model, cfg = load_finetuned(w, "ft_elu")
    assert (cfg["t2r_feature_map"], cfg["t2r_layers"], cfg["decoder_layers"], cfg["decoder_embed_dim"]) == ("elu", "0", 2, 32)
    first, second = (layer.self_attn for layer in model.decoder.layers)
    assert isinstance(first, T2RAttention) and type(first.feature_map).__name__ == "EluFeatureMap"
    assert isinstance(second, MultiheadAttention) and not isinstance(second, T2RAttention)


def test_reconvert_replaces_the_feature_map_deliberately(w):
    """--t2r-reconvert --t2r-feature-map t2r on the elu checkpoint: the t2r map, in the layers the
    checkpoint converted (the options not given stay the checkpoint's), freshly initialised."""
    log = w["ft_reconvert"].output
    assert "initialised 2 new tensors: decoder.layers.{0}.self_attn.feature_map.weight" in log, log[-3000:]
    model, cfg = load_finetuned(w, "ft_reconvert")
    assert (cfg["t2r_feature_map"], cfg["t2r_layers"]) == ("t2r", "0")
    assert type(model.decoder.layers[0].self_attn.feature_map).__name__ == "T2RFeatureMap"
    assert sorted(k for k in model.state_dict() if ".feature_map." in k) == [
        "decoder.layers.0.self_attn.feature_map.bias", "decoder.layers.0.self_attn.feature_map.weight"]
