"""t2r-demo's options, declared once as a dataclass (its parser comes from ``config.add_options``);
its default arms come from ``variants.py``, where the arms are declared."""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import FairseqDataclass

from .variants import DEMO_DEFAULT, VARIANTS


@dataclass
class DemoConfig(FairseqDataclass):
    """t2r-demo's options besides the preset (``--quick`` / ``--full``: one choice spelt as two
    switches, which a dataclass field cannot express; see demo/cli.build_parser). The training
    numbers of each preset are fields of ``demo/presets.Preset``."""

    out: Optional[str] = field(default=None, metadata={"help": "working and report folder (default: runs/demo-PRESET)"})
    tasks: str = field(default="lm,mt", metadata={"help": "comma-separated: lm, mt (default both)"})
    lm_text: Optional[str] = field(
        default=None, metadata={"help": "English text, one sentence or paragraph per line, instead of SOTU + Brown"})
    mt_src: Optional[str] = field(
        default=None, metadata={"help": "English side of a parallel corpus (with --mt-tgt) instead of LibreOffice help"})
    mt_tgt: Optional[str] = field(default=None, metadata={"help": "German side, line-aligned with --mt-src"})
    lm_teacher: Optional[str] = field(
        default=None, metadata={"help": "your softmax transformer_lm checkpoint (trained on --lm-text with the "
                                "same dictionary) instead of training one"})
    mt_teacher: Optional[str] = field(
        default=None, metadata={"help": "your softmax transformer checkpoint, likewise"})
    # two: the 2-core machines this project targets run two steps side by side, one thread each
    jobs: int = field(default=2, metadata={"help": "runs side by side, one thread each (default 2)"})
    seed: int = field(default=1, metadata={"help": "seed of the data split, every conversion and every training run"})
    # the arms compared (demo/variants.py declares them): the control and the paper's recipes by default
    variants: str = field(default=DEMO_DEFAULT, metadata={
        "help": f"comma-separated arms: {', '.join(VARIANTS)} ({', '.join(v for v in VARIANTS if VARIANTS[v].kinds == ('mt',))}: "
                "translation only; t2r converts its self-attention only)"})
    no_teacher_cache: bool = field(default=False, metadata={
        "help": "train the teachers in this run even when a teacher with the same data and settings is cached"})
