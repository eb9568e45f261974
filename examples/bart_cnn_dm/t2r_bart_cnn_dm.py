#!/usr/bin/env python
"""CNN/DailyMail: fairseq's bart.large.cnn -> T2R -> finetune -> summaries of the test set -> ROUGE.

    python examples/bart_cnn_dm/t2r_bart_cnn_dm.py --checkpoint bart.large.cnn/model.pt \\
        --data cnn_dm-bin --out runs/bart-cnn-t2r --max-update N --dry-run

Steps (--steps, default all): teacher (softmax summaries, checks the data), convert (t2r-convert),
train (fairseq-train --finetune-from-model), eval (T2R summaries). Each summary step runs
fairseq-generate on the binarised test split with BART's CNN/DM decoding settings and scores the
detokenised summaries with files2rouge, as examples/bart/README.summarization.md does.
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

ARCHS = ("bart_large",)
# the teacher's published figures (Lewis et al. 2020, table 3: BART on CNN/DailyMail, R1/R2/RL);
# the T2R paper has no summarization experiment, so the target is the softmax model's
TARGETS = {"teacher": {"test": 0.4416}}  # ROUGE-1 F 44.16, as files2rouge writes it (a fraction)

# Finetuning: examples/bart/README.summarization.md's CNN/DM command, verbatim where it applies
# (TOTAL_NUM_UPDATES=20000, WARMUP_UPDATES=500, LR=3e-05, MAX_TOKENS=2048, UPDATE_FREQ=4).
LR = 3e-05
WARMUP_UPDATES = 500
SCHEDULE = ["--truncate-source", "--layernorm-embedding", "--share-all-embeddings",
            "--share-decoder-input-output-embed", "--reset-optimizer", "--reset-dataloader", "--reset-meters",
            "--required-batch-size-multiple", "1", "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", "--dropout", "0.1", "--attention-dropout", "0.1", "--weight-decay", "0.01",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.999)", "--adam-eps", "1e-08", "--clip-norm", "0.1",
            "--lr-scheduler", "polynomial_decay", "--skip-invalid-size-inputs-valid-test", "--find-unused-parameters"]
FP16 = ["--fp16"]
MAX_TOKENS = 2048
UPDATE_FREQ = 4  # the README's UPDATE_FREQ; its GPU count is not stated there (see README.md here)
# Decoding: the same README's CNN/DM settings for bart.sample
DECODING = ["--beam", "4", "--lenpen", "2.0", "--max-len-b", "140", "--min-len", "55", "--no-repeat-ngram-size", "3"]

MODEL_KEYS = (
    "encoder_layers", "decoder_layers", "encoder_embed_dim", "decoder_embed_dim", "decoder_input_dim",
    "decoder_output_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_normalize_before", "decoder_normalize_before", "layernorm_embedding",
    "share_all_embeddings", "share_decoder_input_output_embed", "activation_fn", "no_scale_embedding",
    "max_source_positions", "max_target_positions",
)
STEPS = ("teacher", "convert", "train", "eval")


def build_parser():
    p = recipes.recipe_parser("t2r_bart_cnn_dm.py", __doc__.split("\n\n")[0],
                              checkpoint="the released bart.large.cnn checkpoint (model.pt)",
                              data="CNN/DailyMail binarised as examples/bart/README.summarization.md does (source/target)")
    p.add_argument("--max-update", type=int, default=None,
                   help="finetuning updates (required for train; the README's schedule is 20000)")
    recipes.add_plan_options(p, STEPS)
    p.add_argument("--feature-dim", type=int, default=32, help="--t2r-feature-dim of self-attention (default 32)")
    p.add_argument("--lr", type=float, default=LR, help=f"peak learning rate (default {LR})")
    p.add_argument("--warmup-updates", type=int, default=WARMUP_UPDATES, help=f"default {WARMUP_UPDATES}")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"tokens per GPU batch (default {MAX_TOKENS})")
    p.add_argument("--gpu-batches-per-update", type=int, default=UPDATE_FREQ,
                   help=f"GPUs x --update-freq (default {UPDATE_FREQ}: the README's --update-freq on one GPU)")
    p.add_argument("--bpe-dir", default=None,
                   help="folder with GPT-2's encoder.json and vocab.bpe, to detokenise summaries (teacher/eval)")
    recipes.add_training_switches(p)
    return p


def summarize_and_score(tools, data, path, bpe_dir, gen, cpu):
    """fairseq-generate > GEN (decoded with GPT-2's BPE), then files2rouge on hypotheses vs references."""
    argv = tools["fairseq-generate"] + [
        data, "--user-dir", recipes.USER_DIR, "--task", "translation", "--source-lang", "source",
        "--target-lang", "target", "--truncate-source", "--path", path, "--gen-subset", "test", *DECODING,
        "--batch-size", "32", "--bpe", "gpt2", "--gpt2-encoder-json", os.path.join(bpe_dir, "encoder.json"),
        "--gpt2-vocab-bpe", os.path.join(bpe_dir, "vocab.bpe")] + (["--cpu"] if cpu else [])
    g = shlex.quote(gen)
    score = "\n".join([
        f"grep ^D- {g} | sort -t- -k2 -n | cut -f3 > {g}.hypo",
        f"grep ^T- {g} | sort -t- -k2 -n | cut -f2 > {g}.target",
        f"files2rouge {g}.hypo {g}.target",
    ])
    return argv, score


def checked_data(path, teacher, steps):
    data = os.path.abspath(path)
    recipes.check_data_dir(data)
    dictionary = recipes.load_dictionary(data, "dict.source.txt")
    # bart.large.cnn was finetuned with translation's dictionary: BART's <mask> row is trimmed at load
    rows = teacher.state["model"]["encoder.embed_tokens.weight"].shape[0]
    if rows not in (len(dictionary), len(dictionary) + 1):
        raise T2RUserError(
            f"dict.source.txt in {data} has {len(dictionary)} entries but the checkpoint's encoder.embed_tokens has "
            f"{rows} rows: binarise with the released dict.txt (--srcdict/--tgtdict, see README)")
    needed = (["train", "valid"] if "train" in steps else []) + (["test"] if {"teacher", "eval"} & set(steps) else [])
    for split in needed:
        recipes.check_split(data, split, [f"{split}.source-target.source", f"{split}.source-target.target"],
                            "fairseq-generate" if split == "test" else "fairseq-train")
    return data, dictionary


def make_plan(args):
    steps = recipes.checked_steps(args, STEPS)
    if "train" in steps and args.max_update is None:
        raise T2RUserError("--max-update is required: the README's CNN/DM schedule is 20000 updates (--max-update "
                           "20000); a converted model may need fewer or more (README.md here)")
    if {"teacher", "eval"} & set(steps) and not args.bpe_dir:
        raise T2RUserError("--bpe-dir is required for the teacher and eval steps: the folder with GPT-2's "
                           "encoder.json and vocab.bpe (examples/bart/README.summarization.md downloads them)")
    gpus = recipes.gpu_count(args.gpus, args.dry_run, needs_gpu="train" in steps, cpu=args.cpu)
    teacher = recipes.load_teacher(args.checkpoint, ARCHS, "fairseq's BART large")
    data, dictionary = checked_data(args.data, teacher, steps)
    freq, note = recipes.update_freq(args.gpu_batches_per_update, gpus)
    work = recipes.work_dir(args.out)
    base = [data, "--user-dir", recipes.USER_DIR, "--task", "translation", "--source-lang", "source",
            "--target-lang", "target", "--arch", "t2r_" + teacher.arch]
    options = ["--max-update", str(args.max_update or 0), "--total-num-update", str(args.max_update or 0),
               "--lr", repr(args.lr), "--warmup-updates", str(args.warmup_updates), *SCHEDULE,
               "--max-tokens", str(args.max_tokens), "--update-freq", str(freq)]
    train, checked = recipes.finetune_command(teacher, base, MODEL_KEYS, args, work, options, FP16)

    plan = recipes.Plan("T2R recipe: BART summarization on CNN/DailyMail, fairseq_t2r")
    plan.header = [
        f"teacher: {teacher.path}: {recipes.describe(teacher)}",
        f"data: {data}: dictionary {len(dictionary)} entries, the teacher's vocabulary",
        *recipes.batch_lines(gpus, freq, note, args.max_tokens, "examples/bart README: --update-freq 4 x 2048"),
        checked,
        f"teacher (Lewis et al. 2020): ROUGE-1 F {TARGETS['teacher']['test']} on the CNN/DailyMail test set",
    ]
    plan.steps = plan_steps(args, steps, teacher, data, train, work)
    recipes.check_commands(plan, "fairseq-generate")
    if not args.dry_run and {"teacher", "eval"} & set(steps):
        for program in ("files2rouge", "grep", "sort", "cut", "bash"):
            if shutil.which(program) is None:
                raise T2RUserError(f"{program} is not installed: the ROUGE step needs it (README.md here)")
    return plan, teacher


def plan_steps(args, steps, teacher, data, train, work):
    tools = {name: recipes.tool(name) for name in recipes.TOOL_MODULES}
    out = []
    for name, path, what in (("teacher", teacher.path, "softmax"), ("convert", None, None),
                             ("train", None, None), ("eval", work.best, "T2R")):
        if name not in steps:
            continue
        if name == "convert":
            out.append(recipes.Step("convert", "swap decoder self-attention for T2R (cross-attention stays softmax)",
                                    tools["t2r-convert"] + [teacher.path, work.swapped] + recipes.t2r_options(args)))
        elif name == "train":
            out.append(recipes.Step("train", "finetune (fairseq resumes from checkpoint_last.pt on a rerun)", train))
        else:
            gen = os.path.join(work.evals, f"{name}.test.gen")
            argv, score = summarize_and_score(tools, data, path, os.path.abspath(args.bpe_dir), gen, args.cpu)
            out.append(recipes.Step(name, f"{what} summaries of the test set", argv, stdout=gen))
            out.append(recipes.Step(name, "ROUGE (files2rouge)", shell=score, result=("teacher" if name == "teacher" else "t2r", "test")))
    return out


def main(argv=None):
    recipes.run_recipe(build_parser, make_plan, argv, metric=re.compile(r"ROUGE-1 Average_F: ([0-9.]+)"),
                       metric_name="ROUGE-1 F", targets=TARGETS)


if __name__ == "__main__":
    main()
