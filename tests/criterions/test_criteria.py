"""Attention transfer and distillation criteria, --t2r-trainable, and stage one in t2r-convert.

CLI runs use stock fairseq-train / eval-lm through the tool server on the shared tiny synthetic LM
(tool_server.shared_lm) and a tiny synthetic EN->DE translation corpus made here; in-process
checks compare the transfer loss with fairseq's own MultiheadAttention in float64 and the
distillation loss with fairseq's label_smoothed_cross_entropy. Budget: ~60 s on one core.
"""
import copy
import math
import os
import re

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.modules import MultiheadAttention
from tool_server import TINY_MODEL, TINY_TRAIN, USER_DIR, shared_lm, synthetic_text, tools

from fairseq_t2r import ops, patches
from fairseq_t2r.convert import convert
from fairseq_t2r.criterions.attention_transfer import AttentionTransferCriterion
from fairseq_t2r.criterions.distillation import DistillationCriterion
from fairseq_t2r.errors import T2RUserError
from fairseq_t2r.modules.t2r_attention import T2RAttention

LM_T2R = ["--user-dir", USER_DIR, "--arch", "t2r_transformer_lm", *TINY_MODEL, *TINY_TRAIN,
          "--t2r-feature-dim", "8", "--disable-validation", "--no-save-optimizer-state"]
MT_MODEL = ["--encoder-layers", "1", "--decoder-layers", "2", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
            "--decoder-attention-heads", "4", "--share-all-embeddings", "--dropout", "0.1"]
MT_TRAIN = ["--task", "translation", "-s", "en", "-t", "de", "--optimizer", "adam", "--max-tokens", "512", "--cpu",
            "--seed", "1", "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "simple",
            "--log-interval", "1", "--disable-validation"]
# translation: linear cross-attention too, so that the transfer covers it
OPTIONS = {"t2r_feature_map": "t2r", "t2r_feature_dim": 8, "t2r_layers": None, "t2r_cross_feature_dim": None,
           "t2r_cross": "linear"}


def train(*args, check=True):
    return tools().run("fairseq_cli.train", *args, check=check, threads=1)


def load_sd(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def changed(before, after):
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def logged(output, key):
    return [float(v) for v in re.findall(rf"train_inner \|.*? {key}=([\d.]+)", output)]


def is_fm(name):
    return ".feature_map." in name


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    shared = shared_lm()
    root = tmp_path_factory.mktemp("criteria_lm")
    swapped = str(root / "swapped.pt")
    convert(shared["teacher"], swapped, {**OPTIONS, "t2r_feature_dim": 8}, seed=1)
    return {**shared, "root": root, "swapped": swapped}


@pytest.fixture(scope="module")
def mt(tmp_path_factory):
    """Synthetic EN->DE pairs (the target is a fixed word map of the reversed source), binarised
    with a joined dictionary, and a softmax transformer trained for a few updates on them."""
    root = tmp_path_factory.mktemp("criteria_mt")
    for seed, (split, n) in enumerate((("train", 300), ("valid", 30))):
        synthetic_text(root / f"{split}.en", n, seed=seed + 10)
        with open(root / f"{split}.en") as src, open(root / f"{split}.de", "w") as tgt:
            for line in src:
                tgt.write(" ".join(f"v{(int(w[1:]) * 7) % 40}" for w in reversed(line.split())) + "\n")
    data = root / "data"
    tools().run("fairseq_cli.preprocess", "-s", "en", "-t", "de", "--trainpref", "train", "--validpref", "valid",
                "--joined-dictionary", "--destdir", data, "--workers", "1", cwd=root, threads=1)
    train(data, "--arch", "transformer", *MT_MODEL, *MT_TRAIN, "--lr", "2e-3", "--max-update", "6",
          "--save-dir", root / "softmax")
    return {"root": root, "data": str(data), "teacher": str(root / "softmax" / "checkpoint_last.pt")}


# ---------------------------------------------------------------- attention transfer, fairseq-train
@pytest.fixture(scope="module")
def lm_transfer(lm):
    save = lm["root"] / "transfer"
    res = train(lm["data"], *LM_T2R, "--criterion", "t2r_attention_transfer", "--lr", "1e-2", "--weight-decay", "0.1",
                "--max-update", "12", "--finetune-from-model", lm["swapped"], "--save-dir", save)
    return res.output, load_sd(save / "checkpoint_last.pt")


def test_lm_transfer_logs_per_layer_losses_and_lowers_its_loss(lm_transfer):
    log, _ = lm_transfer
    loss, l0, l1 = logged(log, "loss"), logged(log, "transfer_l0"), logged(log, "transfer_l1")
    assert len(loss) == len(l0) == len(l1) == 12, log[-2000:]
    assert all(abs(a - (b + c)) < 2e-5 for a, b, c in zip(loss, l0, l1))  # loss = sum over layers
    assert sum(loss[-3:]) < 0.8 * sum(loss[:3]), loss
    assert "attention transfer (--criterion t2r_attention_transfer): training 576 of" in log


def test_lm_transfer_changes_only_feature_maps(lm, lm_transfer):
    """Adam with weight decay 0.1: a frozen parameter handed to the optimizer would move."""
    _, after = lm_transfer
    before = load_sd(lm["swapped"])
    diff = changed(before, after)
    assert diff == {k for k in before if is_fm(k)}, sorted(diff)


def test_mt_transfer_covers_cross_attention_and_changes_only_feature_maps(mt):
    save = mt["root"] / "transfer"
    res = train(mt["data"], "--user-dir", USER_DIR, "--arch", "t2r_transformer", *MT_MODEL, *MT_TRAIN,
                "--t2r-feature-dim", "8", "--t2r-cross", "linear", "--criterion", "t2r_attention_transfer",
                "--t2r-transfer-xent-weight", "0.1",
                "--lr", "1e-2", "--weight-decay", "0.1", "--max-update", "8", "--finetune-from-model", mt["teacher"],
                "--save-dir", save)
    for key in ("transfer_l0", "transfer_l0_cross", "transfer_l1", "transfer_l1_cross", "transfer_xent"):
        assert len(logged(res.output, key)) == 8, (key, res.output[-2000:])
    loss = logged(res.output, "loss")
    assert sum(loss[-2:]) < sum(loss[:2]), loss
    teacher, after = load_sd(mt["teacher"]), load_sd(save / "checkpoint_last.pt")
    new = {k for k in after if k not in teacher}
    assert new == {k for k in after if is_fm(k)} and len(new) == 8  # self + cross, 2 layers, weight + bias
    assert all(torch.equal(teacher[k], after[k]) for k in teacher)


def test_transfer_criterion_needs_a_t2r_model():
    from utils import FakeTask, tiny_lm

    softmax_only = FakeTask(tiny_lm(t2r=False).decoder.dictionary)
    with pytest.raises(T2RUserError, match="--arch t2r_") as err:
        AttentionTransferCriterion(softmax_only)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("state", ["delta", "gated-delta"])
def test_transfer_xent_of_a_state_without_weight_distributions_is_one_line(state):
    """The xent term needs weights that are distributions: the delta rule's (RMS norm) are not."""
    from utils import FakeTask, tiny_lm

    model = tiny_lm(t2r_state=state, t2r_norm="rms")
    task = FakeTask(model.decoder.dictionary)
    patches.remember(task, model)
    with pytest.raises(T2RUserError, match="--t2r-transfer-xent-weight 0") as err:
        AttentionTransferCriterion(task, 0.1)
    assert "\n" not in str(err.value) and f"--t2r-state {state}" in str(err.value)
    AttentionTransferCriterion(task, 0.0)  # the output MSE alone is fine


def test_task_that_remembers_its_model_still_copies_and_pickles():
    import pickle

    from utils import FakeTask, tiny_lm

    model = tiny_lm(t2r=True)
    task = FakeTask(model.decoder.dictionary)
    patches.remember(task, model)
    assert patches.built_models(task) == [model]
    assert patches.built_models(copy.deepcopy(task)) == []  # weak references are not copied
    assert patches.built_models(pickle.loads(pickle.dumps(task))) == []


# ------------------------------------------------------------- transfer loss == fairseq's MHA (float64)
def _capture_attention_inputs(model):
    """Forward pre-hooks on every decoder MultiheadAttention: {path: kwargs of its call}.

    Also makes them run fairseq's own implementation (softmax in fp32, as fairseq's
    cross-attention always does) instead of torch's fused kernel, which fairseq uses for
    self-attention in training and which computes the softmax in the input dtype. (The encoder
    is left alone: the T2R model keeps it, fused kernel included.)"""
    seen, handles = {}, []
    for name, m in model.named_modules():
        if isinstance(m, MultiheadAttention) and name.startswith("decoder."):
            m.skip_embed_dim_check = True  # only disables the fused path (and a shape assert)
            def hook(mod, args, kwargs, name=name):
                seen[name] = dict(kwargs)
            handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


def _per_head(module, x_kwargs, causal):
    """Output of ``module`` before out_proj, (T, B, C), on the captured inputs."""
    m = copy.deepcopy(module)
    C = m.out_proj.weight.size(0)
    with torch.no_grad():
        m.out_proj.weight.copy_(torch.eye(C, dtype=m.out_proj.weight.dtype))
        m.out_proj.bias.zero_()
    kw = {k: x_kwargs.get(k) for k in ("query", "key", "value", "key_padding_mask")}
    if isinstance(m, MultiheadAttention):
        T = kw["query"].size(0)
        mask = torch.triu(torch.full((T, T), float("-inf"), dtype=kw["query"].dtype), 1) if causal else None
        return m(**kw, attn_mask=mask, need_weights=False, static_kv=not causal)[0]
    return m(**kw)[0]


def _linear_weights(t2r, kw, causal):
    """Linear attention weights the module's own ops give: its output for one-hot values."""
    q, k = kw["query"], kw["key"]
    phi_q, phi_k = t2r._phi_queries(q), t2r._phi_keys(k, kw.get("key_padding_mask"))
    B, H, S = phi_k.size(0), phi_k.size(1), phi_k.size(2)
    eye = torch.eye(S, dtype=phi_q.dtype).expand(B, H, S, S)
    return ops.causal_quadratic(phi_q, phi_k, eye, t2r.eps) if causal else ops.noncausal(phi_q, phi_k, eye, t2r.eps)


def _check_against_fairseq(t2r_model, softmax_model, task, sample, xent_weight):
    t2r_model.double().eval()
    softmax_model.double().eval()
    crit = AttentionTransferCriterion(task, xent_weight)
    _, n, log = crit(t2r_model, sample)
    seen, handles = _capture_attention_inputs(softmax_model)
    with torch.no_grad():
        softmax_model(**sample["net_input"])
    for h in handles:
        h.remove()
    net = sample["net_input"]
    keep = net.get("prev_output_tokens", net["src_tokens"]).ne(task.target_dictionary.pad()).t()  # (T, B)
    assert n == int(keep.sum())
    labels = {}
    xent = 0.0
    for path, kw in seen.items():
        cross = path.endswith("encoder_attn")
        t2r = t2r_model.get_submodule(path)
        assert isinstance(t2r, T2RAttention)
        with torch.no_grad():
            soft = _per_head(softmax_model.get_submodule(path), kw, causal=not cross)
            lin = _per_head(t2r, kw, causal=not cross)
        err = (lin - soft).pow(2).mean(-1)  # (T, B): mean over heads x head_dim
        label = "transfer_l" + path.split(".")[2] + ("_cross" if cross else "")
        labels[label] = float(err[keep].sum())
        if xent_weight:
            mha = softmax_model.get_submodule(path)
            T = kw["query"].size(0)
            mask = None if cross else torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
            with torch.no_grad():
                _, w_soft = mha(kw["query"], kw["key"], kw["value"], key_padding_mask=kw.get("key_padding_mask"),
                                attn_mask=mask, need_weights=True, need_head_weights=True, static_kv=cross)
                w_lin = _linear_weights(t2r, kw, causal=not cross)  # (B, H, T, S)
            per = -(w_soft.permute(1, 0, 2, 3) * w_lin.clamp(min=1e-6).log()).sum(-1).mean(1)  # (B, T)
            xent += float(per.t()[keep].sum())
    assert set(labels) == {k for k in log if k.startswith("transfer_l")}
    for label, value in labels.items():
        assert math.isclose(float(log[label]), value, rel_tol=1e-9, abs_tol=1e-12), (label, float(log[label]), value)
        assert value > 1e-6  # the linear attention is not the softmax one: the check can fail
    if xent_weight:
        assert math.isclose(float(log["transfer_xent"]), xent, rel_tol=1e-9)
        assert math.isclose(float(log["loss"]), sum(labels.values()) + xent_weight * xent, rel_tol=1e-9)


def test_transfer_loss_equals_fairseq_multihead_attention_lm():
    from utils import FakeTask, tiny_lm

    torch.manual_seed(0)
    t2r_model = tiny_lm(t2r=True, decoder_layers=2)
    softmax_model = tiny_lm(t2r=False, decoder_layers=2)
    softmax_model.load_state_dict({k: v for k, v in t2r_model.state_dict().items() if not is_fm(k)})
    task = FakeTask(t2r_model.decoder.dictionary)
    patches.remember(task, t2r_model)  # as the model's build_model does with the task that builds it
    tokens = torch.randint(4, 50, (3, 11))
    tokens[1, 7:] = task.target_dictionary.pad()  # right padding: key padding mask in self-attention
    sample = {"net_input": {"src_tokens": tokens, "src_lengths": torch.tensor([11, 7, 11])},
              "target": tokens, "ntokens": int(tokens.ne(1).sum())}
    _check_against_fairseq(t2r_model, softmax_model, task, sample, xent_weight=0.5)


def test_transfer_loss_equals_fairseq_multihead_attention_translation(mt):
    """Self-attention (causal, target padding) and cross-attention (non-causal, left-padded source)."""
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([mt["teacher"]], arg_overrides={"data": mt["data"]})
    softmax_model = models[0]
    state = checkpoint_utils.load_checkpoint_to_cpu(mt["teacher"])
    cfg = copy.deepcopy(state["cfg"].model)
    cfg.arch, cfg._name, cfg.t2r_feature_dim, cfg.t2r_cross = "t2r_transformer", "t2r_transformer", 8, "linear"
    torch.manual_seed(1)
    t2r_model = task.build_model(cfg)  # remembers itself on the task: the criterion freezes it
    t2r_model.load_state_dict(state["model"], strict=False)
    d = task.source_dictionary
    src = torch.randint(d.nspecial, len(d), (3, 9))
    src[0, :4] = d.pad()  # left-padded source (fairseq's default)
    prev = torch.randint(d.nspecial, len(d), (3, 8))
    prev[:, 0] = d.eos()
    prev[2, 5:] = d.pad()
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1), "prev_output_tokens": prev},
              "target": prev, "ntokens": int(prev.ne(d.pad()).sum())}
    _check_against_fairseq(t2r_model, softmax_model, task, sample, xent_weight=0.0)
    _check_against_fairseq(t2r_model, softmax_model, task, sample, xent_weight=0.3)


def test_transfer_hook_leaves_normal_forward_alone():
    from utils import tiny_lm

    torch.manual_seed(0)
    model = tiny_lm(t2r=True, attention_dropout=0.0).eval()
    tokens = torch.randint(4, 50, (2, 9))
    with torch.no_grad():
        plain = model(tokens)[0]
        from fairseq_t2r.modules.transfer import recording

        with recording(model) as records:
            teacher_forced = model(tokens)[0]
        again = model(tokens)[0]
    assert torch.equal(plain, again)
    assert not torch.allclose(plain, teacher_forced)  # inside: the softmax outputs were passed on
    assert set(records) == {"l0", "l1"} and all(r.linear is not None for r in records.values())
    assert all(m.transfer is None for m in model.modules() if isinstance(m, T2RAttention))


# ------------------------------------------------------------------------------------ --t2r-trainable
@pytest.mark.parametrize("which", ["attention", "feature-map"])
def test_trainable_subset_changes_only_its_parameters(lm, which):
    save = lm["root"] / f"trainable-{which}"
    res = train(lm["data"], *LM_T2R, "--t2r-trainable", which, "--lr", "1e-2", "--weight-decay", "0.1",
                "--max-update", "3", "--finetune-from-model", lm["swapped"], "--save-dir", save)
    before, after = load_sd(lm["swapped"]), load_sd(save / "checkpoint_last.pt")
    if which == "feature-map":
        expected = {k for k in before if is_fm(k)}
    else:
        expected = {k for k in before if ".self_attn." in k}  # q/k/v/out projections + feature maps
    assert len(expected) == (4 if which == "feature-map" else 20)
    assert changed(before, after) == expected
    lines = [line for line in res.output.splitlines() if f"T2R --t2r-trainable {which}: training" in line]
    n = sum(before[k].numel() for k in expected)
    assert len(lines) == 1 and f"training {n:,} of" in lines[0], res.output[-2000:]


# --------------------------------------------------------------------------------------- distillation
def test_distillation_trains_with_fairseq_train(lm):
    save = lm["root"] / "distil"
    res = train(lm["data"], *LM_T2R, "--criterion", "t2r_distillation", "--t2r-teacher", lm["teacher"],
                "--t2r-kd-weight", "0.5", "--lr", "2e-3", "--max-update", "4",
                "--finetune-from-model", lm["teacher"], "--save-dir", save)
    loss, nll, kd = logged(res.output, "loss"), logged(res.output, "nll_loss"), logged(res.output, "kd_loss")
    assert len(loss) == len(nll) == len(kd) == 4, res.output[-2000:]
    assert all(k > 0 for k in kd)  # the swapped T2R student is not its softmax teacher
    assert all(abs(a - (b + 0.5 * c)) < 3e-3 for a, b, c in zip(loss, nll, kd))  # no smoothing: loss = nll + w kd
    assert re.search(r"train_inner \|.* ppl=[\d.]+", res.output)
    sd = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert not sd.get("criterion")  # the teacher is not part of the checkpoint


@pytest.fixture(scope="module")
def lm_batch(lm):
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([lm["swapped"]], arg_overrides={"data": lm["data"]})
    task.load_dataset("valid")
    itr = task.get_batch_iterator(dataset=task.dataset("valid"), max_tokens=512, seed=1).next_epoch_itr(shuffle=False)
    sample = next(iter(itr))
    assert sample["target"].eq(task.target_dictionary.pad()).any()  # padding must be excluded
    return models[0].eval(), task, sample


def test_kd_of_a_model_to_itself_is_zero_and_task_loss_is_fairseqs(lm, lm_batch):
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    model, task, sample = lm_batch
    crit = DistillationCriterion(task, sentence_avg=False, t2r_teacher=lm["swapped"], t2r_kd_weight=2.0,
                                 label_smoothing=0.1)
    with torch.no_grad():
        loss, size, log = crit(model, sample)
        ref_loss, ref_size, ref_log = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)(model, sample)
    assert float(log["kd_loss"]) == 0.0
    assert size == ref_size and torch.equal(loss, ref_loss) and torch.equal(log["nll_loss"], ref_log["nll_loss"])
    assert not any(p.requires_grad for p in crit.teacher.parameters()) and not crit.teacher.training
    assert not list(crit.parameters())  # the teacher is no parameter of the criterion (optimizer, checkpoint)


def test_translation_distillation_from_a_model_to_itself(mt):
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([mt["teacher"]], arg_overrides={"data": mt["data"]})
    task.load_dataset("valid")
    sample = next(iter(task.get_batch_iterator(dataset=task.dataset("valid"), max_tokens=512).next_epoch_itr(shuffle=False)))
    model = models[0].eval()
    crit = DistillationCriterion(task, sentence_avg=False, t2r_teacher=mt["teacher"], t2r_kd_weight=1.0,
                                 label_smoothing=0.1)
    with torch.no_grad():
        loss, _, log = crit(model, sample)
        ref_loss, _, _ = LabelSmoothedCrossEntropyCriterion(task, False, 0.1)(model, sample)
        model.decoder.layers[-1].final_layer_norm.weight.mul_(3.0)  # now the student differs from its teacher
        _, _, log_changed = crit(model, sample)
    assert float(log["kd_loss"]) == 0.0 and torch.equal(loss, ref_loss)
    assert float(log_changed["kd_loss"]) > 1e-4


def test_kd_to_the_softmax_teacher_is_the_kl_over_target_tokens(lm, lm_batch):
    model, task, sample = lm_batch
    crit = DistillationCriterion(task, sentence_avg=False, t2r_teacher=lm["teacher"], t2r_kd_weight=1.0)
    with torch.no_grad():
        loss, _, log = crit(model, sample)
        s = torch.log_softmax(model(**sample["net_input"])[0].double(), -1)
        t = torch.log_softmax(crit.teacher(**sample["net_input"])[0].double(), -1)
    kl = (t.exp() * (t - s)).sum(-1)
    kl = kl[sample["target"].ne(task.target_dictionary.pad())].sum()
    assert float(kl) > 1e-3
    assert math.isclose(float(log["kd_loss"]), float(kl), rel_tol=1e-4)
    assert math.isclose(float(loss), float(log["nll_loss"]) + float(kl), rel_tol=1e-4)


def test_teacher_with_another_vocabulary_is_refused(lm):
    from utils import FakeTask, dictionary

    with pytest.raises(T2RUserError) as err:
        DistillationCriterion(FakeTask(dictionary(30)), False, t2r_teacher=lm["teacher"])
    assert "vocabulary" in str(err.value) and "30" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("teacher", [None, "nope.pt"])
def test_missing_teacher_is_a_one_line_error(tmp_path, teacher):
    from utils import FakeTask, dictionary

    path = None if teacher is None else str(tmp_path / teacher)
    with pytest.raises(T2RUserError, match="--t2r-teacher") as err:
        DistillationCriterion(FakeTask(dictionary(48)), False, t2r_teacher=path)
    assert "\n" not in str(err.value) and (teacher is None or path in str(err.value))


# ------------------------------------------------------------------------- t2r-convert --transfer-*
def _transfer_loss(path, data):
    """Mean transfer loss of a checkpoint on the valid split (in-process, eval mode)."""
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data})
    crit = AttentionTransferCriterion(task)
    task.load_dataset("valid")
    total = n = 0
    for sample in task.get_batch_iterator(dataset=task.dataset("valid"), max_tokens=1024).next_epoch_itr(shuffle=False):
        with torch.no_grad():
            loss, size, _ = crit(models[0].eval(), sample)
        total, n = total + float(loss), n + size
    return total / n


@pytest.fixture(scope="module")
def staged(lm):
    out = lm["root"] / "stage1.pt"
    res = tools().run("fairseq_t2r.convert", lm["teacher"], out, "--t2r-feature-dim", "8", "--transfer-data",
                      lm["data"], "--transfer-updates", "15", "--transfer-lr", "1e-2", "--transfer-max-tokens", "256",
                      "--", "--cpu", cwd=lm["root"], threads=1)
    return out, res


def test_convert_transfer_writes_a_checkpoint_with_fitted_maps(lm, staged):
    out, res = staged
    assert "Traceback" not in res.stderr
    assert not [p for p in os.listdir(lm["root"]) if ".transfer-" in p]  # scratch directory removed
    teacher, plain, fitted = load_sd(lm["teacher"]), load_sd(lm["swapped"]), load_sd(out)
    assert all(torch.equal(teacher[k], fitted[k]) for k in teacher)
    assert changed(plain, fitted) == {k for k in plain if is_fm(k)}  # same seed: plain swap = the start
    before, after = _transfer_loss(lm["swapped"], lm["data"]), _transfer_loss(str(out), lm["data"])
    print(f"\nvalid transfer loss: plain swap {before:.5f}, after 15 updates of attention transfer {after:.5f}")
    assert after < 0.9 * before
    state = torch.load(out, map_location="cpu", weights_only=False)
    assert state["t2r_attention_transfer"]["updates"] == 15 and "last_optimizer_state" not in state


def test_convert_transfer_output_loads_in_eval_lm(lm, staged):
    out, _ = staged
    res = tools().run("fairseq_cli.eval_lm", lm["data"], "--user-dir", USER_DIR, "--path", out,
                      "--max-tokens", "1024", "--tokens-per-sample", "32", "--gen-subset", "valid", threads=1)
    m = re.search(r"Perplexity: ([\d.]+)", res.output)
    assert m and math.isfinite(float(m.group(1)))


def test_convert_transfer_refuses_to_overwrite(lm, staged):
    out, _ = staged
    before = out.read_bytes()
    res = tools().run("fairseq_t2r.convert", lm["teacher"], out, "--transfer-data", lm["data"], "--transfer-updates",
                      "2", check=False, cwd=lm["root"], threads=1)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert len(res.error_lines()) == 1 and "already exists" in res.error_lines()[0] and "--force" in res.error_lines()[0]
    assert out.read_bytes() == before


@pytest.mark.parametrize("case", ["no-updates", "bad-data", "bad-train-option", "bad-task"])
def test_convert_transfer_bad_input_stops_with_one_line_and_writes_nothing(lm, tmp_path, case):
    from fairseq_t2r.convert import cli_main

    args = {"no-updates": ["--transfer-data", lm["data"]],
            "bad-data": ["--transfer-data", tmp_path / "missing", "--transfer-updates", "2"],
            "bad-train-option": ["--transfer-data", lm["data"], "--transfer-updates", "2", "--", "--no-such-option"],
            "bad-task": ["--transfer-data", lm["data"], "--transfer-updates", "2", "--task", "no_such_task"]}[case]
    with pytest.raises(T2RUserError) as err:
        cli_main([lm["teacher"], str(tmp_path / "o.pt"), *map(str, args)])
    needle = {"no-updates": "--transfer-updates", "bad-data": "--transfer-data", "bad-train-option": "--no-such-option",
              "bad-task": "no_such_task"}[case]
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not os.listdir(tmp_path)  # no output, no scratch directory left


def test_convert_transfer_on_translation(mt):
    out = mt["root"] / "stage1.pt"
    plain = mt["root"] / "plain.pt"
    convert(mt["teacher"], str(plain), {**OPTIONS}, seed=1)
    tools().run("fairseq_t2r.convert", mt["teacher"], out, "--t2r-feature-dim", "8", "--t2r-cross", "linear",
                "--transfer-data", mt["data"], "--transfer-updates", "3",
                "--transfer-lr", "1e-2", "--transfer-max-tokens", "512", "--", "--cpu", cwd=mt["root"], threads=1)
    teacher, plain_sd, fitted = load_sd(mt["teacher"]), load_sd(plain), load_sd(out)
    assert all(torch.equal(teacher[k], fitted[k]) for k in teacher)
    assert changed(plain_sd, fitted) == {k for k in plain_sd if is_fm(k)}
    assert any(".encoder_attn.feature_map." in k for k in fitted)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)], arg_overrides={"data": mt["data"]})
    assert type(models[0]).__name__ == "T2RTransformerModel"
