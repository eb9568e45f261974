#!/usr/bin/env python
"""WikiText-103: fairseq's adaptive-input LM (transformer_lm_wiki103) -> T2R -> finetune -> perplexity.

    python examples/wikitext103/t2r_wikitext103.py --checkpoint adaptive_lm_wiki103.v2/model.pt \\
        --data data-bin/wikitext-103 --out runs/wt103-t2r --dry-run

Steps (--steps, default all): teacher (softmax perplexity, checks the data preparation),
convert (t2r-convert), train (fairseq-train --finetune-from-model), eval (T2R perplexity).
Every hyperparameter below names its source; see README.md beside this file.
"""
import os
import re
import shlex
import sys

# this checkout's fairseq_t2r, whatever else is installed: the recipe and the plugin go together
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fairseq_t2r import recipes  # noqa: E402
from fairseq_t2r.errors import T2RUserError  # noqa: E402
from fairseq_t2r.modules.feature_maps import FEATURE_MAPS  # noqa: E402

# transformer_lm_wiki103 and its alias in fairseq (the same architecture function)
ARCHS = ("transformer_lm_wiki103", "transformer_lm_baevski_wiki103")

# The paper (Kasai et al. 2021): T2R finetuned from a pretrained LM; the teacher's own
# figure is Baevski & Auli's (2019) test perplexity.
TARGETS = {"t2r": {"valid": 19.0, "test": 19.6}, "teacher": {"test": 18.7}}

# Finetuning schedule: the one finetuning command in the authors' repository (jungokasai/T2R,
# train_lm_big_jungo.sh: --restore-file of their pretrained LM with --reset-optimizer), which keeps
# Baevski & Auli's schedule as fairseq's README gives it. Its old fairseq option names map to the
# current ones as fairseq's own README.adaptive_inputs.md does:
#   --max-lr 1.0 --lr 0.0001 --min-lr 1e-09  ->  --lr 1.0 --min-lr 0.0001 --stop-min-lr 1e-09
MAX_UPDATE = 286000
LR = 1.0
WARMUP_UPDATES = 16000
SCHEDULE = ["--optimizer", "nag", "--clip-norm", "0.1",
            "--lr-scheduler", "cosine", "--min-lr", "0.0001", "--stop-min-lr", "1e-09",
            "--warmup-init-lr", "1e-07", "--t-mult", "2", "--lr-period-updates", "270000", "--lr-shrink", "0.75",
            "--sample-break-mode", "none", "--seed", "1"]
FP16 = ["--fp16", "--fp16-init-scale", "8"]  # the authors' script
# Batch: the authors' script runs 1 GPU x --update-freq 16 x --max-tokens 3072 tokens.
MAX_TOKENS = 3072
GPU_BATCHES_PER_UPDATE = 16

# Evaluation: fairseq's language-model README (fairseq-eval-lm --sample-break-mode complete
# --max-tokens 3072 --context-window 2560 --softmax-batch 1024). Old fairseq took the sample length
# from the checkpoint (3072); current fairseq takes --tokens-per-sample from the command line
# (default 1024) and subtracts the context window from it, so it is spelt out: every window is
# 3072 tokens, of which the last 512 are scored with at least 2560 tokens of context.
CONTEXT_WINDOW = 2560
EVAL = ["--sample-break-mode", "complete", "--max-tokens", "3072", "--softmax-batch", "1024"]

# Every setting of the teacher that fairseq-train must reproduce (model shape, adaptive input and
# softmax, dropout): anything that differs from --arch t2r_transformer_lm_wiki103's defaults is
# passed explicitly (nothing, for a checkpoint with those defaults).
MODEL_KEYS = (
    "decoder_layers", "decoder_embed_dim", "decoder_input_dim", "decoder_output_dim",
    "decoder_ffn_embed_dim", "decoder_attention_heads", "decoder_normalize_before",
    "no_decoder_final_norm", "decoder_learned_pos", "no_token_positional_embeddings",
    "share_decoder_input_output_embed", "activation_fn", "no_scale_embedding", "layernorm_embedding",
    "adaptive_input", "adaptive_input_factor", "adaptive_input_cutoff", "adaptive_softmax_cutoff",
    "adaptive_softmax_factor", "tie_adaptive_weights", "tie_adaptive_proj", "add_bos_token",
    "dropout", "attention_dropout", "activation_dropout", "adaptive_softmax_dropout", "decoder_layerdrop",
)
STEPS = ("teacher", "convert", "train", "eval")


def build_parser():
    p = recipes.RecipeArgumentParser(prog="t2r_wikitext103.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the released transformer_lm_wiki103 checkpoint (model.pt)")
    p.add_argument("--data", required=True, help="WikiText-103 binarized with that checkpoint's dict.txt")
    p.add_argument("--out", required=True, help="work directory: swapped.pt, checkpoints/, eval/, results.json")
    p.add_argument("--gpus", type=int, default=None, help="GPUs the training runs on (default: those visible); sets --update-freq")
    p.add_argument("--dry-run", action="store_true", help="check everything and print the commands; run nothing, write nothing")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--feature-map", default="t2r", choices=sorted(FEATURE_MAPS),
                   help="--t2r-feature-map (default t2r, the paper's)")
    p.add_argument("--feature-dim", type=int, default=32, help="--t2r-feature-dim (default 32, the paper's)")
    p.add_argument("--max-update", type=int, default=MAX_UPDATE, help=f"default {MAX_UPDATE} (authors' script)")
    p.add_argument("--lr", type=float, default=LR, help=f"peak learning rate of the cosine schedule (default {LR})")
    p.add_argument("--warmup-updates", type=int, default=WARMUP_UPDATES, help=f"default {WARMUP_UPDATES}")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"tokens per GPU batch (default {MAX_TOKENS})")
    p.add_argument("--gpu-batches-per-update", type=int, default=GPU_BATCHES_PER_UPDATE,
                   help=f"GPUs x --update-freq (default {GPU_BATCHES_PER_UPDATE}, the authors' 1 GPU x 16)")
    p.add_argument("--tokens-per-sample", type=int, default=None, help="training sample length (default: the teacher's)")
    p.add_argument("--context-window", type=int, default=CONTEXT_WINDOW,
                   help=f"evaluation context (default {CONTEXT_WINDOW}, fairseq's README)")
    p.add_argument("--long-context", type=int, default=None, metavar="N",
                   help="also evaluate the T2R model on test with N tokens of context (see README)")
    p.add_argument("--no-fp16", action="store_true", help="train in fp32")
    p.add_argument("--cpu", action="store_true",
                   help="smoke-test the commands on CPU (a stand-in model): --cpu for every fairseq tool, no fp16")
    p.add_argument("--train-extra", default="", help="more fairseq-train options, appended last (quoted string)")
    return p


def eval_argv(data, path, subset, tokens_per_sample, context_window, cpu):
    return recipes.tool("fairseq-eval-lm") + [
        data, "--user-dir", recipes.USER_DIR, "--path", path, "--gen-subset", subset,
        "--tokens-per-sample", str(tokens_per_sample), "--context-window", str(context_window), *EVAL,
        *(["--cpu"] if cpu else [])]


def make_plan(args):
    steps = recipes.parse_steps(args.steps, STEPS)
    if args.feature_dim < 1:
        raise T2RUserError(f"--feature-dim {args.feature_dim}: pass a positive feature size")
    gpus = recipes.gpu_count(args.gpus, args.dry_run, needs_gpu="train" in steps,
                             cpu=args.cpu)
    teacher = recipes.load_teacher(args.checkpoint, ARCHS, "fairseq's adaptive-input WikiText-103 LM")
    t = teacher.args
    if not (t.adaptive_input and t.adaptive_softmax_cutoff):
        raise T2RUserError(f"{args.checkpoint} has no adaptive input/softmax: it is not the released WikiText-103 LM")

    data = os.path.abspath(args.data)
    recipes.check_data_dir(data)
    dictionary = recipes.load_dictionary(data, "dict.txt")
    recipes.check_vocab(teacher, dictionary, os.path.join(data, "dict.txt"), "decoder.embed_tokens")
    if "train" in steps:
        recipes.check_split(data, "train", ["train"], "fairseq-train")
        recipes.check_split(data, "valid", ["valid"], "fairseq-train")
    if {"teacher", "eval"} & set(steps):
        for split in ("valid", "test"):
            recipes.check_split(data, split, [split], "fairseq-eval-lm")

    teacher_tps = getattr(t, "tokens_per_sample", None) or 3072
    tokens_per_sample = args.tokens_per_sample or teacher_tps
    if args.context_window >= teacher_tps:
        raise T2RUserError(
            f"--context-window {args.context_window} leaves no token to score in the teacher's "
            f"{teacher_tps}-token windows: pass a smaller one")
    freq, note = recipes.update_freq(args.gpu_batches_per_update, gpus)

    out = os.path.abspath(args.out)
    swapped = os.path.join(out, "swapped.pt")
    save_dir = os.path.join(out, "checkpoints")
    best = os.path.join(save_dir, "checkpoint_best.pt")
    evals = os.path.join(out, "eval")
    t2r_opts = ["--t2r-feature-map", args.feature_map, "--t2r-feature-dim", str(args.feature_dim)]

    twin = "t2r_" + teacher.arch
    base = [data, "--user-dir", recipes.USER_DIR, "--task", "language_modeling", "--arch", twin]
    model = recipes.model_flags(teacher, base, MODEL_KEYS)
    train = recipes.tool("fairseq-train") + base + model + t2r_opts + [
        "--finetune-from-model", swapped, "--save-dir", save_dir, "--no-epoch-checkpoints",
        "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp",
        "--max-update", str(args.max_update), "--lr", repr(args.lr), "--warmup-updates", str(args.warmup_updates),
        *SCHEDULE, "--tokens-per-sample", str(tokens_per_sample),
        "--max-tokens", str(args.max_tokens), "--update-freq", str(freq),
        "--skip-invalid-size-inputs-valid-test", *([] if args.no_fp16 or args.cpu else FP16), *(["--cpu"] if args.cpu else []),
    ] + shlex.split(args.train_extra)
    copied, new = recipes.check_finetune_start(train[len(recipes.tool("fairseq-train")):], teacher)

    plan = recipes.Plan("T2R recipe: WikiText-103 (Kasai et al. 2021), fairseq_t2r")
    plan.header = [
        f"teacher: {teacher.path}: {recipes.describe(teacher)}, adaptive input/softmax "
        f"(cutoffs {t.adaptive_softmax_cutoff}), trained on {teacher_tps}-token samples",
        f"data: {data}: dict.txt {len(dictionary)} entries, the teacher's vocabulary",
        f"batch: {gpus} GPU(s) x --update-freq {freq} x --max-tokens {args.max_tokens} = "
        f"{gpus * freq * args.max_tokens} tokens per update (authors' script: 1 x 16 x 3072)",
        *([f"note: {note}"] if note else []),
        f"checked: the fairseq-train command builds {twin} and loads the teacher into it "
        f"({copied} tensors copied, {new} new feature-map tensors)",
        f"paper (Kasai et al. 2021): T2R {TARGETS['t2r']['valid']} valid / {TARGETS['t2r']['test']} test "
        f"perplexity; teacher (Baevski & Auli 2019) {TARGETS['teacher']['test']} test",
    ]
    if "teacher" in steps:
        for subset in ("valid", "test"):
            plan.steps.append(recipes.Step("teacher", f"softmax perplexity, {subset} (checks the data preparation)", eval_argv(
                data, teacher.path, subset, teacher_tps, args.context_window, args.cpu),
                log=os.path.join(evals, f"teacher.{subset}.log"), result=("teacher", subset)))
    if "convert" in steps:
        plan.steps.append(recipes.Step("convert", "swap softmax attention for T2R (every teacher tensor kept)",
                                       recipes.tool("t2r-convert") + [teacher.path, swapped] + t2r_opts))
    if "train" in steps:
        plan.steps.append(recipes.Step("train", "finetune (fairseq resumes from checkpoint_last.pt on a rerun)", train))
    if "eval" in steps:
        for subset in ("valid", "test"):
            plan.steps.append(recipes.Step("eval", f"T2R perplexity, {subset}", eval_argv(
                data, best, subset, teacher_tps, args.context_window, args.cpu),
                log=os.path.join(evals, f"t2r.{subset}.log"), result=("t2r", subset)))
        if args.long_context:
            # the same scored block as above, after a longer context: the sinusoidal positions
            # extend past the training length, and fairseq checks only the block against max positions
            length = args.long_context + teacher_tps - args.context_window
            plan.steps.append(recipes.Step("eval", f"T2R perplexity, test, {args.long_context} tokens of context",
                                           eval_argv(data, best, "test", length, args.long_context, args.cpu),
                                           log=os.path.join(evals, f"t2r.test.context{args.long_context}.log"),
                                           result=("t2r", f"test.context{args.long_context}")))
    prefix = recipes.tool("fairseq-eval-lm")
    for step in plan.steps:
        if step.argv and step.argv[: len(prefix)] == prefix:
            recipes.parse_tool_args("fairseq-eval-lm", step.argv[len(prefix):])
    recipes.release(teacher)
    return plan, teacher, {"out": out, "swapped": swapped, "t2r_options": {
        "t2r_feature_map": args.feature_map, "t2r_feature_dim": args.feature_dim}}


def main(argv=None):
    args = build_parser().parse_args(argv)
    with recipes.quiet_logs():
        plan, teacher, ctx = make_plan(args)
    print(plan.render(), flush=True)
    if not args.dry_run:
        recipes.execute(plan, metric=re.compile(r"Perplexity: ([0-9.]+)"), metric_name="perplexity",
                        targets=TARGETS, teacher=teacher, **ctx)


if __name__ == "__main__":
    main()
