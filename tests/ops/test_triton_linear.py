"""ops/triton_linear.py (the optional fused Triton kernels) on CPU: under Triton's interpreter
against the float64 token-by-token reference, and compiled for sm_90 (H100/H200) without a GPU.
Needs ``triton`` and ``numpy`` (``pip install .[gpu]``); skipped, with that reason, without them.

Tolerances, fp32: the interpreter computes each tl.dot with numpy in fp32 (IEEE, no TF32); an
output or gradient entry is a sum of at most C + T / C products of fp32-rounded terms (unit
roundoff u = 6e-8), bounded by about (C + T / C) * u * max|term| = 2e-6 relative here: 1e-5
relative to the largest entry leaves a 5x margin and still catches any wrong term (an O(1e-2)
relative error). fp16: operands rounded to fp16 (u = 4.9e-4) before fp32-accumulated matmuls, so
2e-2 of the largest entry.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fairseq_t2r import ops
from fairseq_t2r.ops import dispatch

# find_spec, not import: triton must not be imported in this process (see ``pipeline``)
HAVE_TRITON = importlib.util.find_spec("triton") is not None and importlib.util.find_spec("numpy") is not None
needs_triton = pytest.mark.skipif(
    not HAVE_TRITON, reason="triton / numpy not installed (pip install .[gpu]): the fused Triton kernels are not tested")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


def _child_env(tmp):
    env = dict(os.environ, PYTHONPATH=REPO, TRITON_CACHE_DIR=str(tmp), TRITON_DEFAULT_FP_FUSION="1",
               OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)
    return env


def pipeline(root):
    """Both checks that need a process of their own, started in the background at collection
    (tests/conftest.py): every interpreter check (triton_interp_checks.py: the interpreter must be
    chosen before triton is first imported, so not in this process) and the sm_90 compile (COMPILE,
    below). None without triton."""
    if not HAVE_TRITON:
        return None
    run = dict(capture_output=True, text=True, timeout=300)
    checks = subprocess.run([sys.executable, os.path.join(HERE, "triton_interp_checks.py")],
                            env=_child_env(root / "interp"), **run)
    return checks, subprocess.run([sys.executable, "-c", COMPILE], env=_child_env(root / "compile"), **run)


@pytest.fixture(scope="module")
def interp(pipeline_result):
    """The interpreter checks' figures: name -> figures."""
    p = pipeline_result[0]
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result.pop("interpreted") is True
    return result


def figures(interp, name):
    value = interp[name]
    assert not isinstance(value, str), value
    return value


@needs_triton
@pytest.mark.parametrize("name", ["fp32_relu", "fp32_phi"])
def test_fp32_outputs_and_gradients_match_float64_reference(interp, name):
    """relu on load and phi given; T = 37 in chunks of 16 (the last partial), padded keys."""
    *errs, padded_key_grad = figures(interp, name)
    assert max(errs) <= 1e-5, f"out, dq, dk, dv relative errors {errs}"
    assert padded_key_grad == 0.0


@needs_triton
def test_fp16_within_rounding(interp):
    *errs, padded_key_grad = figures(interp, "fp16_relu")
    assert max(errs) <= 2e-2, f"out, dq, dk, dv relative errors {errs}"
    assert padded_key_grad == 0.0


@needs_triton
def test_feature_map_weight_gradients(interp):
    """x -> pre-activations x W + b -> kernel with relu on load: dW, db against float64."""
    errs = figures(interp, "weights")
    assert max(errs) <= 1e-5, f"dW, db relative errors {errs}"


@needs_triton
def test_bad_chunk_size_is_one_clear_error(interp):
    assert "chunk_size must be a power of 2 >= 16" in interp["bad_chunk"]


def test_dispatch_default_is_unchanged(backends):
    """Opt-in only: without FAIRSEQ_T2R_TRITON=1 nothing picks the kernels, and never on CPU."""
    if "FAIRSEQ_T2R_TRITON" not in os.environ:
        assert dispatch.USE_TRITON is False
    backends(triton=False)
    backends(fla=False)
    assert dispatch.parallel_form(4096, True, False) == "chunked"
    backends(triton=True)
    assert dispatch.parallel_form(4096, True, False) == "triton"
    assert dispatch.parallel_form(4096, False, False) == "chunked"
    assert dispatch.parallel_form(100, True, False) == "quadratic"
    assert "fairseq_t2r.ops.additive.triton" not in sys.modules  # importing ops never imports it


def test_policy_picks_triton_only_on_cuda_with_the_flag_long_enough_and_a_kernel_dtype(backends):
    """dispatch.parallel_form, the one policy of both training entry points, on plain arguments."""
    backends(fla=False)
    backends(triton=True)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, None):
        assert dispatch.parallel_form(4096, True, False, dtype=dtype) == "triton"
        assert dispatch.parallel_form(4096, False, False, dtype=dtype) == "chunked"  # CPU
        assert dispatch.parallel_form(dispatch.QUADRATIC_MAX_LEN, True, False, dtype=dtype) == "quadratic"
        assert dispatch.parallel_form(4096, True, True, dtype=dtype) == "quadratic"  # weight dropout
    assert dispatch.parallel_form(dispatch.QUADRATIC_MAX_LEN + 1, True, False, dtype=torch.float32) == "triton"
    assert dispatch.parallel_form(4096, True, False, dtype=torch.float64) == "chunked"
    backends(triton=False)
    for dtype in (torch.float32, torch.bfloat16, None):
        assert dispatch.parallel_form(4096, True, False, dtype=dtype) == "chunked"


def _relu_inputs(dtype=torch.float32, T=200, B=2, H=2, F=4, D=3, C=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, C, generator=g, dtype=dtype)
    w, b = torch.randn(H * (2 * F + D), C, generator=g, dtype=dtype), torch.randn(H * (2 * F + D), generator=g, dtype=dtype)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, :9] = True
    return x, w, b, mask, torch.randn(T, B, H * D, generator=g, dtype=dtype), H, F


def _relu_run(x, w, b, mask, dout, H, F):
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
    out = ops.causal_relu_from_input(xs, ws, bs, H, F, mask)
    return [out.detach()] + list(torch.autograd.grad(out, (xs, ws, bs), dout))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_relu_from_input_on_cpu_is_bit_for_bit_the_same_with_the_flag(backends, dtype):
    """FAIRSEQ_T2R_TRITON=1 (the flag it sets) changes nothing on CPU tensors, and imports nothing."""
    args = _relu_inputs(dtype)
    backends(triton=False)
    unset = _relu_run(*args)
    backends(triton=True)
    flagged = _relu_run(*args)
    assert all(torch.equal(a, b) for a, b in zip(flagged, unset))
    assert "fairseq_t2r.ops.additive.triton" not in sys.modules


def test_relu_from_input_runs_the_triton_form_where_the_policy_says_so(monkeypatch):
    """The wiring, without CUDA: when parallel_form answers "triton" (as it does on CUDA with the
    flag), causal_relu_from_input hands every argument to causal_relu_triton_from_input."""
    from fairseq_t2r.ops.additive import fused_relu

    seen = []
    monkeypatch.setattr(dispatch, "parallel_form", lambda *a, **k: seen.append((a, k)) or "triton")
    monkeypatch.setattr(fused_relu, "causal_relu_triton_from_input", lambda *a: ("triton", a))
    x, w, b, mask, _, H, F = _relu_inputs()
    kind, args = ops.causal_relu_from_input(x, w, b, H, F, mask, 0.02, 32)
    assert kind == "triton" and args[3:] == (H, F, mask, 0.02, 32) and args[0] is x
    assert seen == [((x.size(0), False, False), {"dtype": torch.float32})]


@needs_triton
def test_relu_from_input_through_the_triton_kernels_matches_the_fused_form(interp):
    """causal_relu_triton_from_input (fp32, interpreter) against causal_relu_from_input's fused
    chunked form in float64 and in fp32: out, dx, dW, db, with padded keys."""
    errs = figures(interp, "relu_from_input")
    assert max(errs) <= 1e-5, f"vs float64 [out, dx, dW, db], then vs fp32: {errs}"


COMPILE = textwrap.dedent("""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from fairseq_t2r.ops.additive import triton as m
    HALF = {"q_ptr", "k_ptr", "v_ptr", "o_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr"}
    for kernel in (m._state_kernel, m._out_kernel, m._dstate_kernel, m._grad_kernel):
        names = kernel.arg_names
        const = dict(C=64, BF=32, BD=64, RELU=True, PREC="tf32")  # the project's shapes, bf16
        sig = {a: "constexpr" if a in const else ("*bf16" if a in HALF else "*fp32") if a.endswith("_ptr")
               else "fp32" if a == "eps" else "i32" for a in names}
        src = ASTSource(kernel, sig, constexprs={(names.index(a),): x for a, x in const.items()})
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        assert compiled.asm["cubin"], kernel
        print(kernel.__name__, "sm_90 ok")
""")


@needs_triton
def test_kernels_compile_for_sm90_without_a_gpu(pipeline_result):
    """Compile-only (no driver needed): catches compile errors for H100/H200 on a CPU machine."""
    p = pipeline_result[1]
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("sm_90 ok") == 4
