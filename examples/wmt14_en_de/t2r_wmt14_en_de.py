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
from fairseq_t2r.modules.feature_maps import FEATURE_MAPS  # noqa: E402

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
    p = recipes.RecipeArgumentParser(prog="t2r_wmt14_en_de.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the released WMT16 EN-DE big checkpoint (model.pt)")
    p.add_argument("--data", required=True, help="WMT14 EN-DE binarized with that checkpoint's joined dictionary")
    p.add_argument("--out", required=True, help="work directory: swapped.pt, checkpoints/, eval/, results.json")
    p.add_argument("--max-update", type=int, default=None,
                   help="finetuning updates (required for train: see README for why there is no default)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs the training runs on (default: those visible); sets --update-freq")
    p.add_argument("--dry-run", action="store_true", help="check everything and print the commands; run nothing, write nothing")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--feature-map", default="t2r", choices=sorted(FEATURE_MAPS),
                   help="--t2r-feature-map (default t2r, the paper's)")
    p.add_argument("--feature-dim", type=int, default=32, help="--t2r-feature-dim, self- and cross-attention (default 32)")
    p.add_argument("--lr", type=float, default=LR, help=f"peak learning rate (default {LR})")
    p.add_argument("--warmup-updates", type=int, default=WARMUP_UPDATES, help=f"default {WARMUP_UPDATES}")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"tokens per GPU batch (default {MAX_TOKENS})")
    p.add_argument("--gpu-batches-per-update", type=int, default=GPU_BATCHES_PER_UPDATE,
                   help=f"GPUs x --update-freq (default {GPU_BATCHES_PER_UPDATE} = 8 GPUs x 16)")
    p.add_argument("--beam", type=int, default=BEAM, help=f"beam size (default {BEAM})")
    p.add_argument("--lenpen", type=float, default=None, help="fairseq-generate --lenpen (default: fairseq's, 1.0)")
    p.add_argument("--no-fp16", action="store_true", help="train in fp32")
    p.add_argument("--cpu", action="store_true",
                   help="smoke-test the commands on CPU (a stand-in model): --cpu for every fairseq tool, no fp16")
    p.add_argument("--train-extra", default="", help="more fairseq-train options, appended last (quoted string)")
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


def make_plan(args):
    steps = recipes.parse_steps(args.steps, STEPS)
    if args.feature_dim < 1:
        raise T2RUserError(f"--feature-dim {args.feature_dim}: pass a positive feature size")
    if "train" in steps and args.max_update is None:
        raise T2RUserError(
            "--max-update is required: the paper's finetuning length is not in the sources this recipe "
            "cites (examples/wmt14_en_de/README.md); choose one, e.g. from a short run's validation loss")
    gpus = recipes.gpu_count(args.gpus, args.dry_run, needs_gpu="train" in steps,
                             cpu=args.cpu)
    teacher = recipes.load_teacher(args.checkpoint, ARCHS, "fairseq's big EN-DE transformer")
    t = teacher.args
    if not getattr(t, "share_all_embeddings", False):
        raise T2RUserError(
            f"{args.checkpoint} does not share its embeddings (--share-all-embeddings): the released "
            f"WMT16 EN-DE model does, and the recipe's data uses its joined dictionary")
    src, tgt = getattr(t, "source_lang", None) or "en", getattr(t, "target_lang", None) or "de"
    if (src, tgt) != ("en", "de"):
        raise T2RUserError(f"{args.checkpoint} translates {src}->{tgt}; this recipe and its target are EN->DE")

    data = os.path.abspath(args.data)
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
    freq, note = recipes.update_freq(args.gpu_batches_per_update, gpus)

    out = os.path.abspath(args.out)
    swapped = os.path.join(out, "swapped.pt")
    save_dir = os.path.join(out, "checkpoints")
    evals = os.path.join(out, "eval")
    t2r_opts = ["--t2r-feature-map", args.feature_map, "--t2r-feature-dim", str(args.feature_dim)]
    tools = {name: recipes.tool(name) for name in recipes.TOOL_MODULES}

    twin = "t2r_" + teacher.arch
    base = [data, "--user-dir", recipes.USER_DIR, "--task", "translation", "--source-lang", src,
            "--target-lang", tgt, "--arch", twin]
    model = recipes.model_flags(teacher, base, MODEL_KEYS)
    train = tools["fairseq-train"] + base + model + t2r_opts + [
        "--finetune-from-model", swapped, "--save-dir", save_dir, "--no-epoch-checkpoints",
        "--max-update", str(args.max_update or 0), "--lr", repr(args.lr), "--warmup-updates", str(args.warmup_updates),
        *SCHEDULE, "--max-tokens", str(args.max_tokens), "--update-freq", str(freq),
        *([] if args.no_fp16 or args.cpu else FP16), *(["--cpu"] if args.cpu else []),
    ] + shlex.split(args.train_extra)
    copied, new = recipes.check_finetune_start(train[len(tools["fairseq-train"]):], teacher)

    plan = recipes.Plan("T2R recipe: WMT14 EN-DE (Kasai et al. 2021), fairseq_t2r")
    plan.header = [
        f"teacher: {teacher.path}: {recipes.describe(teacher)}, shared embeddings, {src}->{tgt}",
        f"data: {data}: joined dictionary {len(dicts[src])} entries, the teacher's vocabulary",
        f"batch: {gpus} GPU(s) x --update-freq {freq} x --max-tokens {args.max_tokens} = "
        f"{gpus * freq * args.max_tokens} tokens per update (fairseq scaling_nmt README: 8 x 16 x 3584)",
        *([f"note: {note}"] if note else []),
        f"checked: the fairseq-train command builds {twin} and loads the teacher into it "
        f"({copied} tensors copied, {new} new feature-map tensors)",
        f"paper (Kasai et al. 2021): T2R {TARGETS['t2r']['test']} BLEU on newstest2014 (compound split)",
    ]
    if "teacher" in steps:
        gen = os.path.join(evals, "teacher.test.gen")
        argv, score = generate_and_score(tools, data, teacher.path, src, tgt, args.beam, args.lenpen, gen, args.cpu)
        plan.steps.append(recipes.Step("teacher", "softmax translations of newstest2014 (checks the data)", argv, stdout=gen))
        plan.steps.append(recipes.Step("teacher", "compound-split BLEU", shell=score, result=("teacher", "test")))
    if "convert" in steps:
        plan.steps.append(recipes.Step("convert", "swap decoder self- and cross-attention for T2R",
                                       tools["t2r-convert"] + [teacher.path, swapped] + t2r_opts))
    if "train" in steps:
        plan.steps.append(recipes.Step("train", "finetune (fairseq resumes from checkpoint_last.pt on a rerun)", train))
    if "eval" in steps:
        gen = os.path.join(evals, "t2r.test.gen")
        argv, score = generate_and_score(tools, data, os.path.join(save_dir, "checkpoint_best.pt"),
                                         src, tgt, args.beam, args.lenpen, gen, args.cpu)
        plan.steps.append(recipes.Step("eval", "T2R translations of newstest2014 (recurrent decoding)", argv, stdout=gen))
        plan.steps.append(recipes.Step("eval", "compound-split BLEU", shell=score, result=("t2r", "test")))
    prefix = tools["fairseq-generate"]
    for step in plan.steps:
        if step.argv and step.argv[: len(prefix)] == prefix:
            recipes.parse_tool_args("fairseq-generate", step.argv[len(prefix):])
    if not args.dry_run and {"teacher", "eval"} & set(steps):
        for program in ("perl", "awk", "grep", "cut", "bash"):
            if shutil.which(program) is None:
                raise T2RUserError(f"{program} is not installed: compound_split_bleu.sh's scoring lines need it")
    recipes.release(teacher)
    return plan, teacher, {"out": out, "swapped": swapped, "t2r_options": {
        "t2r_feature_map": args.feature_map, "t2r_feature_dim": args.feature_dim}}


def main(argv=None):
    args = build_parser().parse_args(argv)
    with recipes.quiet_logs():
        plan, teacher, ctx = make_plan(args)
    print(plan.render(), flush=True)
    if not args.dry_run:
        recipes.execute(plan, metric=re.compile(r"BLEU4 = ([0-9.]+)"), metric_name="BLEU (compound split)",
                        targets=TARGETS, teacher=teacher, **ctx)


if __name__ == "__main__":
    main()
