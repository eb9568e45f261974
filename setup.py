"""fairseq_t2r: finetune pretrained fairseq transformers into RNNs (T2R)."""
from setuptools import find_packages, setup

setup(
    name="fairseq_t2r",
    version="0.1.0",
    description="T2R for fairseq: swap softmax attention for learned linear attention, "
    "finetune with fairseq-train, generate as an RNN",
    packages=find_packages(include=["fairseq_t2r", "fairseq_t2r.*"]),
    python_requires=">=3.10",
    install_requires=[
        # torch first: the install scripts pin torch==2.13.0 before this runs, so pip
        # never pulls a multi-GB CUDA wheel onto a CPU machine.
        "torch>=2.1",
        # fairseq 0.12.2 from PyPI does not import on Python 3.11; ve-fairseq is a build of
        # fairseq's main branch with prebuilt wheels for CPython 3.11/3.12.
        "ve-fairseq==0.12.3",
        "sacrebleu>=2.0",
        "sacremoses>=0.0.53",
        "subword-nmt>=0.3.8",
        # the demo's and the benchmarks' plots
        "matplotlib>=3.5",
    ],
    extras_require={
        # ruff: the lint the test command runs; triton + numpy: the Triton kernel's tests run it on the
        # CPU under Triton's interpreter (Linux wheels only: elsewhere those tests say they are skipped)
        "test": ["pytest>=7", "hypothesis>=6", "ruff>=0.6", "triton>=3.8; platform_system == 'Linux'",
                 "numpy; platform_system == 'Linux'"],
        # ops/triton_linear.py's kernels (>= 3.8: Triton 3.6-3.7 miscompile small-K blocks on
        # Hopper, Triton issue 11366); numpy: Triton's CPU interpreter, which the tests use
        "gpu": ["flash-linear-attention", "triton>=3.8", "numpy"],
    },
    entry_points={
        "console_scripts": [
            "t2r-convert=fairseq_t2r.convert:cli_main",
            "t2r-prepare-lm=fairseq_t2r.prep.lm:cli_main",
            "t2r-prepare-mt=fairseq_t2r.prep.mt:cli_main",
            "t2r-demo=fairseq_t2r.demo.cli:cli_main",
            "t2r-compare=fairseq_t2r.compare.cli:cli_main",
        ]
    },
)
