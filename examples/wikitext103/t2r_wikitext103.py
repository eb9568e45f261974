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
import sys

# this checkout's fairseq_t2r, whatever else is installed: the recipe and the plugin go together
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fairseq_t2r import recipes  # noqa: E402
from fairseq_t2r.errors import T2RUserError  # noqa: E402

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
    p = recipes.recipe_parser("t2r_wikitext103.py", __doc__.split("\n\n")[0],
                              checkpoint="the released transformer_lm_wiki103 checkpoint (model.pt)",
                              data="WikiText-103 binarized with that checkpoint's dict.txt")
    recipes.add_plan_options(p, STEPS)
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
    recipes.add_training_switches(p)
    return p


def eval_argv(data, path, subset, tokens_per_sample, context_window, cpu):
    return recipes.tool("fairseq-eval-lm") + [
        data, "--user-dir", recipes.USER_DIR, "--path", path, "--gen-subset", subset,
        "--tokens-per-sample", str(tokens_per_sample), "--context-window", str(context_window), *EVAL,
        *(["--cpu"] if cpu else [])]


def load_wiki103_teacher(path):
    teacher = recipes.load_teacher(path, ARCHS, "fairseq's adaptive-input WikiText-103 LM")
    if not (teacher.args.adaptive_input and teacher.args.adaptive_softmax_cutoff):
        raise T2RUserError(f"{path} has no adaptive input/softmax: it is not the released WikiText-103 LM")
    return teacher


def checked_data(path, teacher, steps):
    """The data directory (absolute) and its dictionary, once they fit the teacher and the steps."""
    data = os.path.abspath(path)
    recipes.check_data_dir(data)
    dictionary = recipes.load_dictionary(data, "dict.txt")
    recipes.check_vocab(teacher, dictionary, os.path.join(data, "dict.txt"), "decoder.embed_tokens")
    if "train" in steps:
        recipes.check_split(data, "train", ["train"], "fairseq-train")
        recipes.check_split(data, "valid", ["valid"], "fairseq-train")
    if {"teacher", "eval"} & set(steps):
        for split in ("valid", "test"):
            recipes.check_split(data, split, [split], "fairseq-eval-lm")
    return data, dictionary


def teacher_sample_length(args, teacher):
    """The teacher's training sample length, which the evaluation windows keep; --context-window must leave
    tokens to score in it."""
    teacher_tps = getattr(teacher.args, "tokens_per_sample", None) or 3072
    if args.context_window >= teacher_tps:
        raise T2RUserError(
            f"--context-window {args.context_window} leaves no token to score in the teacher's "
            f"{teacher_tps}-token windows: pass a smaller one")
    return teacher_tps


def train_options(args, teacher_tps, freq):
    """fairseq-train's options after --finetune-from-model: criterion, schedule, batch."""
    return ["--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp",
            "--max-update", str(args.max_update), "--lr", repr(args.lr), "--warmup-updates", str(args.warmup_updates),
            *SCHEDULE, "--tokens-per-sample", str(args.tokens_per_sample or teacher_tps),
            "--max-tokens", str(args.max_tokens), "--update-freq", str(freq),
            "--skip-invalid-size-inputs-valid-test"]


def make_plan(args):
    steps = recipes.checked_steps(args, STEPS)
    gpus = recipes.gpu_count(args.gpus, args.dry_run, needs_gpu="train" in steps,
                             cpu=args.cpu)
    teacher = load_wiki103_teacher(args.checkpoint)
    data, dictionary = checked_data(args.data, teacher, steps)
    teacher_tps = teacher_sample_length(args, teacher)
    freq, note = recipes.update_freq(args.gpu_batches_per_update, gpus)
    work = recipes.work_dir(args.out)
    base = [data, "--user-dir", recipes.USER_DIR, "--task", "language_modeling", "--arch", "t2r_" + teacher.arch]
    train, checked = recipes.finetune_command(teacher, base, MODEL_KEYS, args, work,
                                              train_options(args, teacher_tps, freq), FP16)

    plan = recipes.Plan("T2R recipe: WikiText-103 (Kasai et al. 2021), fairseq_t2r")
    plan.header = [
        f"teacher: {teacher.path}: {recipes.describe(teacher)}, adaptive input/softmax "
        f"(cutoffs {teacher.args.adaptive_softmax_cutoff}), trained on {teacher_tps}-token samples",
        f"data: {data}: dict.txt {len(dictionary)} entries, the teacher's vocabulary",
        *recipes.batch_lines(gpus, freq, note, args.max_tokens, "authors' script: 1 x 16 x 3072"),
        checked,
        f"paper (Kasai et al. 2021): T2R {TARGETS['t2r']['valid']} valid / {TARGETS['t2r']['test']} test "
        f"perplexity; teacher (Baevski & Auli 2019) {TARGETS['teacher']['test']} test",
    ]
    plan.steps = plan_steps(args, steps, teacher, data, teacher_tps, train, work)
    recipes.check_commands(plan, "fairseq-eval-lm")
    return plan, teacher


def plan_steps(args, steps, teacher, data, teacher_tps, train, work):
    out = []
    if "teacher" in steps:
        for subset in ("valid", "test"):
            out.append(recipes.Step("teacher", f"softmax perplexity, {subset} (checks the data preparation)", eval_argv(
                data, teacher.path, subset, teacher_tps, args.context_window, args.cpu),
                log=os.path.join(work.evals, f"teacher.{subset}.log"), result=("teacher", subset)))
    if "convert" in steps:
        out.append(recipes.Step("convert", "swap softmax attention for T2R (every teacher tensor kept)",
                                recipes.tool("t2r-convert") + [teacher.path, work.swapped] + recipes.t2r_options(args)))
    if "train" in steps:
        out.append(recipes.Step("train", "finetune (fairseq resumes from checkpoint_last.pt on a rerun)", train))
    if "eval" in steps:
        out += eval_steps(args, data, teacher_tps, work)
    return out


def eval_steps(args, data, teacher_tps, work):
    """The T2R model's perplexity on valid and test, and on test after --long-context tokens if asked."""
    out = [recipes.Step("eval", f"T2R perplexity, {subset}", eval_argv(
        data, work.best, subset, teacher_tps, args.context_window, args.cpu),
        log=os.path.join(work.evals, f"t2r.{subset}.log"), result=("t2r", subset)) for subset in ("valid", "test")]
    if args.long_context:
        # the same scored block as above, after a longer context: the sinusoidal positions
        # extend past the training length, and fairseq checks only the block against max positions
        length = args.long_context + teacher_tps - args.context_window
        out.append(recipes.Step("eval", f"T2R perplexity, test, {args.long_context} tokens of context",
                                eval_argv(data, work.best, "test", length, args.long_context, args.cpu),
                                log=os.path.join(work.evals, f"t2r.test.context{args.long_context}.log"),
                                result=("t2r", f"test.context{args.long_context}")))
    return out


def main(argv=None):
    recipes.run_recipe(build_parser, make_plan, argv, metric=re.compile(r"Perplexity: ([0-9.]+)"),
                       metric_name="perplexity", targets=TARGETS)


if __name__ == "__main__":
    main()
