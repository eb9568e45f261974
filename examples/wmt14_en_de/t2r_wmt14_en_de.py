#!/usr/bin/env python
"""WMT14 EN-DE: fairseq's WMT16 EN-DE big transformer -> T2R -> finetune -> compound-split BLEU.

    python examples/wmt14_en_de/t2r_wmt14_en_de.py --checkpoint wmt16.en-de.joined-dict.transformer/model.pt \\
        --data data-bin/wmt16_en_de_bpe32k --out runs/wmt-t2r --max-update N --dry-run

Steps (--steps, default all): teacher (softmax BLEU, checks the data preparation), convert
(t2r-convert), train (fairseq-train --finetune-from-model), eval (T2R BLEU). BLEU is fairseq's
compound_split_bleu.sh method: newstest2014 generated with beam 4 and --remove-bpe, hyphenated
compounds split as ##AT##-##AT## in hypotheses and (tokenized) references, scored by fairseq-score.
Every hyperparameter below names its source; see README.md beside this file.
"""
import os
import re
import shlex
import shutil
import sys

# this checkout's fairseq_t2r, whatever else is installed: the recipe and the plugin go together
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fairseq_t2r import recipes  # noqa: E402
from fairseq_t2r.errors import T2RUserError  # noqa: E402

# fairseq's big EN-DE transformers: one shape, different dropout / layer-norm placement
ARCHS = ("transformer_vaswani_wmt_en_de_big", "transformer_wmt_en_de_big", "transformer_wmt_en_de_big_t2t")

# The paper (Kasai et al. 2021): T2R finetuned from the pretrained big transformer, WMT14 EN-DE test.
TARGETS = {"t2r": {"test": 28.7}}

# Optimisation: the teacher's own recipe, fairseq's examples/scaling_nmt README (Ott et al. 2018),
# in its big-batch form ("8 GPUs: add --update-freq 16 ... 0.001 works well for big batches").
# Its --min-lr 1e-09 is called --stop-min-lr in current fairseq.
LR = 0.001
WARMUP_UPDATES = 4000
SCHEDULE = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
            "--lr-scheduler", "inverse_sqrt", "--warmup-init-lr", "1e-07", "--stop-min-lr", "1e-09",
            "--weight-decay", "0.0", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--seed", "1"]
FP16 = ["--fp16"]
MAX_TOKENS = 3584
GPU_BATCHES_PER_UPDATE = 128  # 8 GPUs x --update-freq 16

# Evaluation: beam 4 (Vaswani et al.'s beam for WMT EN-DE); --lenpen is fairseq's default unless
# given (no source for the paper's value could be consulted, see README). The scoring lines are
# those of fairseq's scripts/compound_split_bleu.sh, verbatim (the script is not in the pip package).
BEAM = 4
COMPOUND_SPLIT = r"perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'"

MODEL_KEYS = (
    "encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim", "decoder_input_dim",
    "decoder_output_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_normalize_before", "decoder_normalize_before",
    "encoder_learned_pos", "decoder_learned_pos", "no_token_positional_embeddings",
    "share_all_embeddings", "share_decoder_input_output_embed", "activation_fn", "no_scale_embedding",
    "layernorm_embedding", "max_source_positions", "max_target_positions",
    "dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "decoder_layerdrop",
)
STEPS = ("teacher", "convert", "train", "eval")


def build_parser():
    p = recipes.recipe_parser("t2r_wmt14_en_de.py", __doc__.split("\n\n")[0],
                              checkpoint="the released WMT16 EN-DE big checkpoint (model.pt)",
                              data="WMT14 EN-DE binarized with that checkpoint's joined dictionary")
    p.add_argument("--max-update", type=int, default=None,
                   help="finetuning updates (required for train: see README for why there is no default)")
    recipes.add_plan_options(p, STEPS)
    p.add_argument("--feature-dim", type=int, default=32, help="--t2r-feature-dim, self- and cross-attention (default 32)")
    # the paper converts cross-attention too; the plugin's own default keeps it softmax
    p.add_argument("--cross", choices=["linear", "softmax"], default="linear",
                   help="--t2r-cross: linear (the paper's, default) or softmax (convert self-attention only)")
    p.add_argument("--lr", type=float, default=LR, help=f"peak learning rate (default {LR})")
    p.add_argument("--warmup-updates", type=int, default=WARMUP_UPDATES, help=f"default {WARMUP_UPDATES}")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"tokens per GPU batch (default {MAX_TOKENS})")
    p.add_argument("--gpu-batches-per-update", type=int, default=GPU_BATCHES_PER_UPDATE,
                   help=f"GPUs x --update-freq (default {GPU_BATCHES_PER_UPDATE} = 8 GPUs x 16)")
    p.add_argument("--beam", type=int, default=BEAM, help=f"beam size (default {BEAM})")
    p.add_argument("--lenpen", type=float, default=None, help="fairseq-generate --lenpen (default: fairseq's, 1.0)")
    recipes.add_training_switches(p)
    return p


def generate_and_score(tools, data, path, src, tgt, beam, lenpen, gen, cpu):
    """fairseq-generate > GEN, then compound_split_bleu.sh's lines on GEN."""
    argv = tools["fairseq-generate"] + [
        data, "--user-dir", recipes.USER_DIR, "--source-lang", src, "--target-lang", tgt, "--path", path,
        "--gen-subset", "test", "--beam", str(beam), "--remove-bpe", "--batch-size", "128"]
    if lenpen is not None:
        argv += ["--lenpen", repr(lenpen)]
    if cpu:
        argv += ["--cpu"]
    g = shlex.quote(gen)
    score = "\n".join([
        f"grep ^H {g} | awk -F '\\t' '{{print $NF}}' | {COMPOUND_SPLIT} > {g}.sys",
        f"grep ^T {g} | cut -f2- | {COMPOUND_SPLIT} > {g}.ref",
        f"{shlex.join(tools['fairseq-score'])} --sys {g}.sys --ref {g}.ref",
    ])
    return argv, score


def load_en_de_teacher(path):
    """The teacher, and its source and target languages, once checked: shared embeddings, EN->DE."""
    teacher = recipes.load_teacher(path, ARCHS, "fairseq's big EN-DE transformer")
    t = teacher.args
    if not getattr(t, "share_all_embeddings", False):
        raise T2RUserError(
            f"{path} does not share its embeddings (--share-all-embeddings): the released "
            f"WMT16 EN-DE model does, and the recipe's data uses its joined dictionary")
    src, tgt = getattr(t, "source_lang", None) or "en", getattr(t, "target_lang", None) or "de"
    if (src, tgt) != ("en", "de"):
        raise T2RUserError(f"{path} translates {src}->{tgt}; this recipe and its target are EN->DE")
    return teacher, src, tgt


def checked_data(path, teacher, src, tgt, steps):
    """The data directory (absolute) and its joined dictionary, once they fit the teacher and the steps."""
    data = os.path.abspath(path)
    recipes.check_data_dir(data)
    dicts = {lang: recipes.load_dictionary(data, f"dict.{lang}.txt") for lang in (src, tgt)}
    if dicts[src].symbols != dicts[tgt].symbols:
        raise T2RUserError(
            f"dict.{src}.txt and dict.{tgt}.txt in {data} differ, but the model shares one embedding: "
            f"binarize with --joined-dictionary and the released model's dictionary (see README)")
    recipes.check_vocab(teacher, dicts[src], os.path.join(data, f"dict.{src}.txt"), "encoder.embed_tokens")
    needed = (["train", "valid"] if "train" in steps else []) + (["test"] if {"teacher", "eval"} & set(steps) else [])
    for split in needed:
        for lang in (src, tgt):
            recipes.check_split(data, split, [f"{split}.{src}-{tgt}.{lang}", f"{split}.{tgt}-{src}.{lang}"],
                                "fairseq-generate" if split == "test" else "fairseq-train")
    return data, dicts[src]


def train_options(args, freq):
    """fairseq-train's options after --finetune-from-model: schedule (criterion included), batch."""
    return ["--max-update", str(args.max_update or 0), "--lr", repr(args.lr), "--warmup-updates", str(args.warmup_updates),
            *SCHEDULE, "--max-tokens", str(args.max_tokens), "--update-freq", str(freq)]


def make_plan(args):
    steps = recipes.checked_steps(args, STEPS)
    if "train" in steps and args.max_update is None:
        raise T2RUserError(
            "--max-update is required: the paper's finetuning length is not in the sources this recipe "
            "cites (examples/wmt14_en_de/README.md); choose one, e.g. from a short run's validation loss")
    gpus = recipes.gpu_count(args.gpus, args.dry_run, needs_gpu="train" in steps,
                             cpu=args.cpu)
    teacher, src, tgt = load_en_de_teacher(args.checkpoint)
    data, dictionary = checked_data(args.data, teacher, src, tgt, steps)
    freq, note = recipes.update_freq(args.gpu_batches_per_update, gpus)
    work = recipes.work_dir(args.out)
    base = [data, "--user-dir", recipes.USER_DIR, "--task", "translation", "--source-lang", src,
            "--target-lang", tgt, "--arch", "t2r_" + teacher.arch]
    train, checked = recipes.finetune_command(teacher, base, MODEL_KEYS, args, work, train_options(args, freq), FP16)

    plan = recipes.Plan("T2R recipe: WMT14 EN-DE (Kasai et al. 2021), fairseq_t2r")
    plan.header = [
        f"teacher: {teacher.path}: {recipes.describe(teacher)}, shared embeddings, {src}->{tgt}",
        f"data: {data}: joined dictionary {len(dictionary)} entries, the teacher's vocabulary",
        *recipes.batch_lines(gpus, freq, note, args.max_tokens, "fairseq scaling_nmt README: 8 x 16 x 3584"),
        checked,
        f"paper (Kasai et al. 2021): T2R {TARGETS['t2r']['test']} BLEU on newstest2014 (compound split)",
    ]
    plan.steps = plan_steps(args, steps, teacher, data, src, tgt, train, work)
    recipes.check_commands(plan, "fairseq-generate")
    if not args.dry_run and {"teacher", "eval"} & set(steps):
        for program in ("perl", "awk", "grep", "cut", "bash"):
            if shutil.which(program) is None:
                raise T2RUserError(f"{program} is not installed: compound_split_bleu.sh's scoring lines need it")
    return plan, teacher


def plan_steps(args, steps, teacher, data, src, tgt, train, work):
    tools = {name: recipes.tool(name) for name in recipes.TOOL_MODULES}
    out = []
    if "teacher" in steps:
        gen = os.path.join(work.evals, "teacher.test.gen")
        argv, score = generate_and_score(tools, data, teacher.path, src, tgt, args.beam, args.lenpen, gen, args.cpu)
        out.append(recipes.Step("teacher", "softmax translations of newstest2014 (checks the data)", argv, stdout=gen))
        out.append(recipes.Step("teacher", "compound-split BLEU", shell=score, result=("teacher", "test")))
    if "convert" in steps:
        what = "self- and cross-attention" if args.cross == "linear" else "self-attention"
        out.append(recipes.Step("convert", f"swap decoder {what} for T2R",
                                tools["t2r-convert"] + [teacher.path, work.swapped] + recipes.t2r_options(args)))
    if "train" in steps:
        out.append(recipes.Step("train", "finetune (fairseq resumes from checkpoint_last.pt on a rerun)", train))
    if "eval" in steps:
        gen = os.path.join(work.evals, "t2r.test.gen")
        argv, score = generate_and_score(tools, data, work.best, src, tgt, args.beam, args.lenpen, gen, args.cpu)
        out.append(recipes.Step("eval", "T2R translations of newstest2014 (recurrent decoding)", argv, stdout=gen))
        out.append(recipes.Step("eval", "compound-split BLEU", shell=score, result=("t2r", "test")))
    return out


def main(argv=None):
    recipes.run_recipe(build_parser, make_plan, argv, metric=re.compile(r"BLEU4 = ([0-9.]+)"),
                       metric_name="BLEU (compound split)", targets=TARGETS)


if __name__ == "__main__":
    main()
