"""The paper-scale recipes (examples/wikitext103, examples/wmt14_en_de) on tiny stand-ins of the
released checkpoints, saved in their pre-hydra format (``args`` Namespace): ``--dry-run`` accepts
them and prints commands that fairseq's own parsers accept, with --update-freq following the GPU
count; a wrong checkpoint, wrong data or a bad option stops with one line and writes nothing; the
script runs from the shell, where the conversion step runs for real and its output loads as the
T2R model. (The whole pipeline on CPU, --cpu with a stand-in, takes minutes: it is not a test.)"""
import importlib.util
import os
import shlex
import shutil
import subprocess
from argparse import Namespace

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.data import indexed_dataset
from fairseq.models import ARCH_CONFIG_REGISTRY
from fairseq.models.transformer_lm import TransformerLanguageModel, base_lm_architecture
from tool_server import tools
from utils import REPO, FakeTask, dictionary

import fairseq_t2r.models  # noqa: F401  registers the models, applies the patches
from fairseq_t2r import recipes
from fairseq_t2r.command_line import rebuild_flags
from fairseq_t2r.errors import T2RUserError

VOCAB = 60
LM_TOKENS_PER_SAMPLE = 64
LM_CONTEXT = ["--context-window", "48"]  # the stand-in's 64-token samples leave 16 tokens to score
MT_TINY = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
           "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
           "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
HISTORY = [{"criterion_name": "x", "optimizer_name": "x", "lr_scheduler_state": {"best": 3.0}, "num_updates": 1000}]


def load_script(relpath):
    spec = importlib.util.spec_from_file_location(os.path.basename(relpath)[:-3], os.path.join(REPO, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LM = load_script("examples/wikitext103/t2r_wikitext103.py")
MT = load_script("examples/wmt14_en_de/t2r_wmt14_en_de.py")


# --------------------------------------------------------------------------- stand-ins

def save_prehydra(path, args, model):
    torch.save({"args": args, "model": model.state_dict(), "optimizer_history": HISTORY,
                "extra_state": {}, "last_optimizer_state": None}, path)
    return str(path)


def binarize(prefix, d, lines=5):
    builder = indexed_dataset.make_builder(f"{prefix}.bin", impl="mmap", vocab_size=len(d))
    for i in range(lines):
        builder.add_item(torch.IntTensor([d.nspecial + i, d.nspecial + 2 * i, d.eos()]))
    builder.finalize(f"{prefix}.idx")


def lm_checkpoint(path, arch="transformer_lm_wiki103", **overrides):
    """transformer_lm_wiki103 with tiny dimensions: adaptive input and softmax, tied, as released."""
    fields = dict(arch=arch, task="language_modeling", criterion="adaptive_loss",
                  tokens_per_sample=LM_TOKENS_PER_SAMPLE, decoder_layers=2, decoder_embed_dim=32,
                  decoder_input_dim=32, decoder_output_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=4)
    if arch == "transformer_lm_wiki103":
        fields.update(adaptive_input_cutoff="20,40", adaptive_softmax_cutoff="20,40")
    fields.update(overrides)
    args = Namespace(**fields)
    ARCH_CONFIG_REGISTRY[arch](args)  # as fairseq-train filled in the released model's args
    base_lm_architecture(args)  # what the registry's plain "transformer_lm" entry leaves out
    torch.manual_seed(0)
    return save_prehydra(path, args, TransformerLanguageModel.build_model(args, FakeTask(dictionary(VOCAB))))


def mt_checkpoint(path, data, arch="transformer_vaswani_wmt_en_de_big", shared=True):
    argv = [data, "--task", "translation", "-s", "en", "-t", "de", "--arch", arch, *MT_TINY]
    args = options.parse_args_and_arch(options.get_training_parser(), argv + (["--share-all-embeddings"] if shared else []))
    torch.manual_seed(0)
    return save_prehydra(path, args, tasks.setup_task(args).build_model(args))


def binarized_data(root, prefixes):
    """``root/data`` with dict.txt or dict.LANG.txt and the train/valid/test binaries of each prefix
    ("" for a language model, ".en-de.en" and ".en-de.de" for translation)."""
    data = root / "data"
    data.mkdir()
    d = dictionary(VOCAB)
    for prefix in prefixes:
        d.save(str(data / f"dict{prefix[-3:] if prefix else ''}.txt"))
        for split in ("train", "valid", "test"):
            binarize(data / f"{split}{prefix}", d)
    return data


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("wt103")
    data = binarized_data(root, [""])
    return {"ckpt": lm_checkpoint(root / "model.pt"), "data": str(data), "root": root}


@pytest.fixture(scope="module")
def mt(tmp_path_factory):
    root = tmp_path_factory.mktemp("wmt")
    data = binarized_data(root, [".en-de.en", ".en-de.de"])
    return {"ckpt": mt_checkpoint(root / "model.pt", str(data)), "data": str(data), "root": root}


def commands(printed):
    """The plan's commands: every line that is not a comment, split as the shell would."""
    return [shlex.split(line) for line in printed.splitlines() if line.strip() and not line.startswith("#")]


def opt(argv, name):
    assert argv.count(name) == 1, f"{name} given {argv.count(name)} times"
    return argv[argv.index(name) + 1]


def tool_of(argv):
    """fairseq-train / t2r-convert / ... whichever way recipes.tool spelt it."""
    for name, module in recipes.TOOL_MODULES.items():
        if os.path.basename(argv[0]) == name or module in argv[:3]:
            return name
    return argv[0]


def lm_argv(lm, out, *extra):
    return ["--checkpoint", lm["ckpt"], "--data", lm["data"], "--out", str(out), *LM_CONTEXT, *extra]


def mt_argv(mt, out, *extra):
    return ["--checkpoint", mt["ckpt"], "--data", mt["data"], "--out", str(out), *extra]


# --------------------------------------------------------------------------- dry runs

def test_wikitext103_dry_run_prints_checked_commands(lm, tmp_path, capsys):
    out = tmp_path / "run"
    LM.main(lm_argv(lm, out, "--gpus", "8", "--dry-run", "--long-context", "1000"))
    printed = capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing
    cmds = commands(printed)
    by_tool = {}
    for argv in cmds:
        by_tool.setdefault(tool_of(argv), []).append(argv)
    assert sorted(by_tool) == ["fairseq-eval-lm", "fairseq-train", "t2r-convert"]

    (convert,) = by_tool["t2r-convert"]
    swapped = str(out / "swapped.pt")
    assert convert[-6:] == [lm["ckpt"], swapped, "--t2r-feature-map", "t2r", "--t2r-feature-dim", "32"]

    (train,) = by_tool["fairseq-train"]
    assert opt(train, "--arch") == "t2r_transformer_lm_wiki103"
    assert opt(train, "--finetune-from-model") == swapped
    assert opt(train, "--criterion") == "adaptive_loss" and opt(train, "--ddp-backend") == "legacy_ddp"
    assert opt(train, "--t2r-feature-dim") == "32"
    assert opt(train, "--update-freq") == "2"  # 16 GPU-batches per update on 8 GPUs
    assert opt(train, "--max-tokens") == "3072" and opt(train, "--max-update") == "286000"
    assert opt(train, "--lr-scheduler") == "cosine" and opt(train, "--lr") == "1.0"
    assert opt(train, "--tokens-per-sample") == str(LM_TOKENS_PER_SAMPLE)  # the teacher's
    # the stand-in's small dimensions differ from the architecture's defaults, so they are spelt out
    assert opt(train, "--decoder-layers") == "2" and opt(train, "--decoder-embed-dim") == "32"
    assert opt(train, "--adaptive-softmax-cutoff") == "20,40"

    evals = by_tool["fairseq-eval-lm"]
    assert [(opt(e, "--path"), opt(e, "--gen-subset")) for e in evals] == [
        (lm["ckpt"], "valid"), (lm["ckpt"], "test"),
        (str(out / "checkpoints" / "checkpoint_best.pt"), "valid"),
        (str(out / "checkpoints" / "checkpoint_best.pt"), "test"),
        (str(out / "checkpoints" / "checkpoint_best.pt"), "test")]
    assert [opt(e, "--context-window") for e in evals] == ["48"] * 4 + ["1000"]
    assert [opt(e, "--tokens-per-sample") for e in evals] == ["64"] * 4 + ["1016"]
    assert "18.7" in printed and "19.6" in printed and "19.0" in printed
    assert "48 tensors copied, 4 new feature-map tensors" in printed


@pytest.mark.parametrize("gpus,freq,note", [(1, 16, False), (3, 6, True), (16, 1, False), (32, 1, True)])
def test_update_freq_keeps_gpu_batches_per_update(gpus, freq, note):
    got, why = recipes.update_freq(16, gpus)
    assert got == freq and (why is not None) == note


def test_wmt_dry_run_prints_checked_commands(mt, tmp_path, capsys):
    out = tmp_path / "run"
    MT.main(mt_argv(mt, out, "--gpus", "4", "--dry-run", "--max-update", "1000"))
    printed = capsys.readouterr().out
    assert not out.exists()
    cmds = commands(printed)
    (train,) = [c for c in cmds if tool_of(c) == "fairseq-train"]
    assert opt(train, "--arch") == "t2r_transformer_vaswani_wmt_en_de_big"
    assert "--share-all-embeddings" in train and opt(train, "--encoder-layers") == "2"
    assert opt(train, "--update-freq") == "32"  # 128 GPU-batches per update on 4 GPUs
    assert opt(train, "--max-tokens") == "3584" and opt(train, "--lr") == "0.001"
    assert opt(train, "--criterion") == "label_smoothed_cross_entropy" and opt(train, "--label-smoothing") == "0.1"
    assert opt(train, "--finetune-from-model") == str(out / "swapped.pt")
    (convert,) = [c for c in cmds if tool_of(c) == "t2r-convert"]
    assert opt(train, "--t2r-cross") == opt(convert, "--t2r-cross") == "linear"  # the paper's, not the plugin's default
    generates = [c for c in cmds if tool_of(c) == "fairseq-generate"]
    assert [opt(g, "--path") for g in generates] == [mt["ckpt"], str(out / "checkpoints" / "checkpoint_best.pt")]
    for g in generates:
        assert opt(g, "--beam") == "4" and "--remove-bpe" in g and opt(g, "--gen-subset") == "test"
        assert g[-2:][0] == ">"  # the translations go to a file that the scoring lines read
    scores = [c for c in cmds if tool_of(c) == "fairseq-score"]
    assert len(scores) == 2 and printed.count("##AT##-##AT##") == 4
    assert "28.7" in printed


def test_plain_transformer_lm_teacher_gets_flags_that_rebuild_it(lm, tmp_path):
    """Plain transformer_lm is a dataclass model's own arch: fairseq's parse sets none of its
    settings (fairseq-train fills them in afterwards), which once made every such teacher look like
    the defaults and gave no flags at all. Its 2 layers and 128 dims are spelt out, and the command
    builds a model that the teacher loads into strictly, softmax and T2R alike, whether the flags
    come from the recipe's key list or from every option of the model (as the demo asks)."""
    path = lm_checkpoint(tmp_path / "plain.pt", arch="transformer_lm", decoder_embed_dim=128, decoder_input_dim=128,
                         decoder_output_dim=128, decoder_ffn_embed_dim=256)
    teacher = recipes.load_teacher(path, ["transformer_lm"], "a transformer_lm")
    for arch in ("transformer_lm", "t2r_transformer_lm"):
        base = [lm["data"], "--user-dir", recipes.USER_DIR, "--task", "language_modeling", "--arch", arch]
        for flags in (recipes.model_flags(teacher, base, LM.MODEL_KEYS), rebuild_flags(teacher.args, teacher.arch, base)):
            assert opt(flags, "--decoder-layers") == "2" and opt(flags, "--decoder-embed-dim") == "128"
            assert opt(flags, "--decoder-ffn-embed-dim") == "256"
            args = recipes.parse_tool_args("fairseq-train", base + flags)
            model = tasks.setup_task(args).build_model(args)
            model.load_state_dict(dict(teacher.state["model"]), strict=True)


def test_compound_split_scoring_lines(tmp_path):
    """The scoring lines are compound_split_bleu.sh's: hypotheses and references with hyphenated
    compounds split as ##AT##-##AT##, in generation order."""
    if not all(shutil.which(p) for p in ("perl", "awk", "bash")):
        pytest.skip("needs perl, awk and bash")
    gen = tmp_path / "gen.txt"
    gen.write_text("S-0\tthe state-of-the-art\nT-0\tder Stand-der-Technik\nH-0\t-0.5\tder Stand-der Technik\n"
                   "D-0\t-0.5\tder Stand-der Technik\nP-0\t-0.1 -0.2\n"
                   "S-1\ta test\nT-1\tein Test\nH-1\t-0.1\tein Test-Fall\n")
    _, score = MT.generate_and_score({"fairseq-generate": ["g"], "fairseq-score": ["true"]},
                                     "d", "p", "en", "de", 4, None, str(gen), cpu=False)
    subprocess.run(["bash", "-o", "pipefail", "-c", score], check=True)
    assert (tmp_path / "gen.txt.sys").read_text().splitlines() == [
        "der Stand ##AT##-##AT## der Technik", "ein Test ##AT##-##AT## Fall"]
    assert (tmp_path / "gen.txt.ref").read_text().splitlines() == [
        "der Stand ##AT##-##AT## der ##AT##-##AT## Technik", "ein Test"]


# --------------------------------------------------------------------------- bad input: one line, nothing written

def one_line_error(excinfo, needle):
    # a SystemExit whose code is a string: Python prints it alone on stderr and exits with status 1
    message = excinfo.value.code
    assert isinstance(message, str) and message.startswith("fairseq_t2r: error: ") and "\n" not in message, message
    assert needle in message, message
    return message


@pytest.fixture(scope="module")
def wrong(lm, mt, tmp_path_factory):
    """Checkpoints the recipes must refuse, and data directories that do not fit."""
    root = tmp_path_factory.mktemp("wrong")
    small_dict = root / "small_dict"
    small_dict.mkdir()
    dictionary(VOCAB - 8).save(str(small_dict / "dict.txt"))
    no_test = root / "no_test"
    no_test.mkdir()
    shutil.copy(os.path.join(lm["data"], "dict.txt"), no_test / "dict.txt")
    for split in ("train", "valid"):
        for ext in ("bin", "idx"):
            shutil.copy(os.path.join(lm["data"], f"{split}.{ext}"), no_test / f"{split}.{ext}")
    not_joined = root / "not_joined"
    shutil.copytree(mt["data"], not_joined)
    dictionary(VOCAB).save(str(not_joined / "dict.en.txt"))
    d = dictionary(VOCAB - 1)
    d.add_symbol("extra")
    d.save(str(not_joined / "dict.de.txt"))
    return {
        "base_lm": lm_checkpoint(root / "base_lm.pt", arch="transformer_lm"),
        "untied": lm_checkpoint(root / "untied.pt", tie_adaptive_weights=False, tie_adaptive_proj=False),
        "base_mt": mt_checkpoint(root / "base_mt.pt", mt["data"], arch="transformer_wmt_en_de"),
        "unshared_mt": mt_checkpoint(root / "unshared.pt", mt["data"], shared=False),
        "small_dict": str(small_dict), "no_test": str(no_test), "not_joined": str(not_joined),
        "missing": str(root / "missing"),
    }


LM_BAD = [
    ("wrong architecture", {"checkpoint": "base_lm"}, [], "is a transformer_lm model, not fairseq's adaptive-input"),
    ("translation model", {"checkpoint": "mt"}, [], "is a transformer_vaswani_wmt_en_de_big model"),
    ("untied variant", {"checkpoint": "untied"}, [], "tie_adaptive_weights=False"),
    ("missing checkpoint", {"checkpoint": "missing"}, [], "does not exist"),
    ("missing data dir", {"data": "missing"}, [], "does not exist: pass the fairseq-preprocess --destdir"),
    ("other dictionary", {"data": "small_dict"}, [], "has 52 entries but the checkpoint's decoder.embed_tokens has 60 rows"),
    ("missing test split", {"data": "no_test"}, [], "has no test split"),
    ("zero GPUs", {}, ["--gpus", "0"], "--gpus 0"),
    ("unknown step", {}, ["--steps", "train,deploy"], "--steps"),
    ("bad option", {}, ["--fp17"], "unrecognized arguments: --fp17"),
    ("misspelt fairseq option", {}, ["--train-extra", "--warmup-updatez 5"], "fairseq-train would reject"),
]


@pytest.mark.parametrize("case,swap,extra,needle", LM_BAD, ids=[c[0] for c in LM_BAD])
def test_wikitext103_rejects_with_one_line(lm, mt, wrong, tmp_path, case, swap, extra, needle):
    paths = {"checkpoint": lm["ckpt"], "data": lm["data"]}
    for key, name in swap.items():
        paths[key] = mt["ckpt"] if name == "mt" else wrong[name]
    out = tmp_path / "run"
    argv = ["--checkpoint", paths["checkpoint"], "--data", paths["data"], "--out", str(out), *LM_CONTEXT]
    with pytest.raises(T2RUserError) as excinfo:
        LM.main(argv + (extra if "--gpus" in extra else ["--gpus", "8"] + extra) + ["--dry-run"])
    one_line_error(excinfo, needle)
    assert not out.exists()


def test_no_gpu_visible_asks_for_gpus(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(T2RUserError) as excinfo:
        LM.main(lm_argv(lm, tmp_path / "run", "--dry-run"))
    one_line_error(excinfo, "no CUDA GPU is visible: pass --gpus N")
    with pytest.raises(T2RUserError) as excinfo:  # and a real run planned for GPUs it does not have
        LM.main(lm_argv(lm, tmp_path / "run", "--gpus", "8"))
    one_line_error(excinfo, "no CUDA GPU is visible here")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("steps,needle", [("eval", "checkpoint_best.pt does not exist: run the train step first"),
                                          ("train", "swapped.pt does not exist: run the convert step first")])
def test_a_step_whose_input_is_missing_stops_before_anything_runs(lm, tmp_path, steps, needle):
    out = tmp_path / "run"
    with pytest.raises(T2RUserError) as excinfo:
        LM.main(lm_argv(lm, out, "--cpu", "--steps", steps))
    one_line_error(excinfo, needle)
    assert not out.exists()


MT_BAD = [
    ("language model", {"checkpoint": "lm"}, "is a transformer_lm_wiki103 model, not fairseq's big EN-DE"),
    ("base transformer", {"checkpoint": "base_mt"}, "is a transformer_wmt_en_de model"),
    ("separate embeddings", {"checkpoint": "unshared_mt"}, "does not share its embeddings"),
    ("not a joined dictionary", {"data": "not_joined"}, "dict.en.txt and dict.de.txt"),
    ("no max-update", {"max_update": None}, "--max-update is required"),
]


@pytest.mark.parametrize("case,swap,needle", MT_BAD, ids=[c[0] for c in MT_BAD])
def test_wmt_rejects_with_one_line(lm, mt, wrong, tmp_path, case, swap, needle):
    paths = {"checkpoint": mt["ckpt"], "data": mt["data"], "max_update": "1000"}
    for key, name in swap.items():
        paths[key] = name if name is None else (lm["ckpt"] if name == "lm" else wrong[name])
    out = tmp_path / "run"
    argv = ["--checkpoint", paths["checkpoint"], "--data", paths["data"], "--out", str(out), "--gpus", "8", "--dry-run"]
    if paths["max_update"]:
        argv += ["--max-update", paths["max_update"]]
    with pytest.raises(T2RUserError) as excinfo:
        MT.main(argv)
    one_line_error(excinfo, needle)
    assert not out.exists()


# --------------------------------------------------------------------------- the conversion step, for real

def test_convert_step_from_the_shell_writes_a_t2r_checkpoint_that_loads(mt, tmp_path, capsys):
    """The script as a user runs it (its own process, no --dry-run), for the one step that needs no GPU."""
    out = tmp_path / "run"
    script = os.path.join(REPO, "examples", "wmt14_en_de", "t2r_wmt14_en_de.py")
    # forked from the tool server: ``python SCRIPT ARGS`` without paying fairseq's import again
    res = tools().run(None, *mt_argv(mt, out, "--steps", "convert"), script=script, check=False, threads=1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "1/1 convert" in res.stdout and "fairseq_t2r: error" not in res.stderr
    swapped = out / "swapped.pt"
    (model,), _ = checkpoint_utils.load_model_ensemble([str(swapped)])
    assert type(model).__name__ == "T2RTransformerModel"
    teacher = torch.load(mt["ckpt"], weights_only=False)["model"]
    loaded = model.state_dict()
    for name, tensor in teacher.items():
        assert torch.equal(loaded[name], tensor), name
    new = [k for k in loaded if k not in teacher]
    assert len(new) == 8 and all(".feature_map." in k for k in new)  # (w, b) x (self, cross) x 2 layers

    # a rerun reuses it; other options do not silently reuse a conversion made with different ones
    written = swapped.stat().st_mtime_ns
    MT.main(mt_argv(mt, out, "--steps", "convert"))
    assert "reusing" in capsys.readouterr().out and swapped.stat().st_mtime_ns == written
    with pytest.raises(T2RUserError) as excinfo:
        MT.main(mt_argv(mt, out, "--steps", "convert", "--feature-dim", "16"))
    one_line_error(excinfo, "exists but is not")


# --------------------------------------------------------------------------- BART summarization (CNN/DailyMail)

BART = load_script("examples/bart_cnn_dm/t2r_bart_cnn_dm.py")


def test_bart_cnn_dm_dry_run_on_the_released_format_stand_in(capsys, tmp_path):
    """The bart.large.cnn stand-in (tests/release_models.py: a tiny bart_large in the pre-hydra
    format, with a classification head): --dry-run checks it loads into t2r_bart_large and prints
    commands fairseq's parsers accept; nothing is written; a translation transformer is refused."""
    from release_models import released

    from fairseq_t2r.command_line import parse_tool_args

    rel = released()
    out_dir = tmp_path / "out"
    common = ["--data", os.path.join(rel["data"], "cnn"), "--bpe-dir", str(tmp_path), "--out", str(out_dir),
              "--max-update", "10", "--gpus", "8", "--dry-run"]
    BART.main(["--checkpoint", rel["bart"], *common])
    printed = capsys.readouterr().out
    assert "builds t2r_bart_large and loads the teacher into it (" in printed and "4 new feature-map tensors" in printed
    lines = [line for line in printed.splitlines() if line.startswith(("fairseq-train", "fairseq-generate"))]
    assert [line.split()[0] for line in lines] == ["fairseq-generate", "fairseq-train", "fairseq-generate"]
    for line in lines:
        argv = shlex.split(line.split(" > ")[0])
        parsed = parse_tool_args(argv[0], argv[1:])
        assert parsed.task == "translation" and (argv[0] != "fairseq-train" or parsed.arch == "t2r_bart_large")
    assert not out_dir.exists()
    with pytest.raises(T2RUserError, match="is a transformer_wmt_en_de_big model, not fairseq's BART large"):
        BART.main(["--checkpoint", rel["m2m"], *common])
