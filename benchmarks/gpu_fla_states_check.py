#!/usr/bin/env python
"""Check of ops/gated/fla.py and ops/delta/fla.py: each state update served by flash-linear-attention's chunked
kernels against our training form, forward and backward, fp32 with IEEE matmuls
(``TRITON_F32_DEFAULT=ieee``), with left padding in one sequence. Needs the optional ``fla``
package (``pip install .[gpu]``). States: decay (chunk_simple_gla, learned per-head decay),
gate (chunk_simple_gla, per-head gates), additive rms (chunk_simple_gla without a gate,
``normalize=False``, from an initial state, final state returned), feature gate (chunk_gla),
delta and gated delta (chunk_gated_delta_rule). Prints, per state and tensor, the max abs
difference fla - ours and ours' own fp32 error against float64 (the dtype's yardstick).

    python -m benchmarks.gpu_fla_states_check                  # on a GPU, through dispatch with
                                                               # FAIRSEQ_T2R_FLA=1 (B=2, H=8, T=1024)
    python -m benchmarks.gpu_fla_states_check --cpu-interpret  # Triton's interpreter, tiny shapes,
                                                               # with the shims of shared/gpu/interp_patch.py
Exits 1 when a difference exceeds TOL relative to the tensor's largest value (or 1).
"""
import os
import sys

CPU = "--cpu-interpret" in sys.argv
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")
os.environ["FAIRSEQ_T2R_FLA"] = "1"
if CPU:  # must be set before triton is first imported
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.nn.functional as nnf

from fairseq_t2r import ops
from fairseq_t2r.ops import kernels

TOL = 2e-4  # fp32: sums of ~T fp32-rounded terms, different summation orders
DEV = "cpu" if CPU else "cuda"
SHAPE = (1, 2, 80, 16, 8) if CPU else (2, 8, 1024, 32, 64)  # B, H, T, F, D (T = 80: a partial 2nd chunk)


def load_fla():
    """Imports fla's kernels (under the interpreter: with the shims) and checks they are found."""
    if CPU:
        for d in (os.path.join(ROOT, "shared", "gpu"), os.path.join(os.path.dirname(ROOT), "shared", "gpu"),
                  os.environ.get("SHIM_DIR", "")):
            if os.path.isfile(os.path.join(d, "interp_patch.py")):
                sys.path.insert(0, d)
                break
        import interp_patch
    for name in kernels._FLA_NAMES:
        if kernels.fla_state_kernel(name) is None:
            sys.exit(f"fla's kernel for {name} is not importable: pip install .[gpu]")
    if CPU:
        interp_patch.patch_fla_kernel_ranges([m for m in list(sys.modules) if m.startswith("fla.ops.")])
        count_interpreter_launches()


LAUNCHES = {}  # kernel name -> launches under the interpreter (evidence that fla's Triton kernels ran)


def count_interpreter_launches():
    """Counts the interpreter's kernel launches by name (GridExecutor is what every launch runs)."""
    from triton.runtime import interpreter

    call = interpreter.GridExecutor.__call__

    def counted(self, *args, **kwargs):
        name = getattr(self.fn, "__name__", "?")
        LAUNCHES[name] = LAUNCHES.get(name, 0) + 1
        return call(self, *args, **kwargs)

    interpreter.GridExecutor.__call__ = counted


def inputs(state, dtype, seed=0):
    """The form's inputs (leaves, in ``dtype``) and its name: (fla-served fn, ours fn, leaves, call)."""
    B, H, T, F, D = SHAPE
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[-1, :5] = True  # left padding in the last sequence
    leaves = {"q": nnf.relu(r(B, H, T, F)), "k": nnf.relu(r(B, H, T, F)) , "v": r(B, H, T, D)}
    if state == "decay":
        leaves["log_decay"] = nnf.logsigmoid(r(H) + 3.0)
    elif state in ("gate", "gated delta"):
        leaves["log_g"] = nnf.logsigmoid(r(B, H, T) + 2.0) / 2
    elif state == "feature gate":
        leaves["log_g"] = nnf.logsigmoid(r(B, H, T, F) + 2.0) / 2
    elif state == "additive rms":
        leaves["S0"], leaves["z0"] = r(B, H, F, D), nnf.relu(r(B, H, F))
    if state in ("delta", "gated delta"):
        leaves["beta"] = torch.sigmoid(r(B, H, T))
    leaves = {n: t.to(DEV, dtype).requires_grad_() for n, t in leaves.items()}
    return leaves, mask.to(DEV)


def run(state, leaves, mask, fla):
    """The state's training form on ``leaves`` (fla's or ours), padding applied as the module does;
    -> the tensors to compare (out, and the final state where asked)."""
    q, k, v = leaves["q"], ops.mask_padded_keys(leaves["k"], mask), leaves["v"]
    if state in ("delta", "gated delta"):
        log_g = ops.mask_padded_log_gates(leaves["log_g"], mask) if state == "gated delta" else None
        fn = ops.delta_fla if fla else ops.delta_chunked
        return [fn(q, k, v, log_g, leaves["beta"])]
    fn = ops.causal_gated_fla if fla else ops.causal_gated
    if state == "decay":
        log_g = ops.decay_log_gates(leaves["log_decay"], q.size(0), q.size(2), mask)
    elif state == "additive rms":
        out, (S, z) = fn(q, k, v, None, initial_state=(leaves["S0"], leaves["z0"]), return_state=True, normalize=False)
        return [out, S, z]
    else:
        log_g = ops.mask_padded_log_gates(leaves["log_g"], mask)
    return [fn(q, k, v, log_g)]


def compare(state, dtype=torch.float32):
    """Rows (state, tensor, max |fla - ours|, ours' error vs float64, ok) for outputs and grads."""
    leaves, mask = inputs(state, dtype)
    ref_leaves = {n: t.detach().double().requires_grad_() for n, t in leaves.items()}
    outs = {"fla": run(state, leaves, mask, True), "ours": run(state, leaves, mask, False)}
    ref = run(state, ref_leaves, mask, False)
    seeds = [torch.randn_like(o) for o in ref]
    names = list(leaves)
    grads = {w: torch.autograd.grad(o, list(leaves.values()), [s.to(dtype) for s in seeds])
             for w, o in outs.items()}
    ref_g = torch.autograd.grad(ref, list(ref_leaves.values()), seeds)
    rows = []
    pairs = [(n, outs["fla"][i], outs["ours"][i], ref[i]) for i, n in enumerate(["out", "S", "z"][:len(ref)])]
    pairs += [(f"d{n}", grads["fla"][i], grads["ours"][i], ref_g[i]) for i, n in enumerate(names)]
    for name, a, b, c in pairs:
        diff = (a.double() - b.double()).abs().max().item()
        yard = (b.double() - c).abs().max().item()
        scale = max(c.abs().max().item(), 1.0)
        rows.append((state, name, diff, yard, diff <= TOL * scale))
    return rows


def main():
    load_fla()
    torch.manual_seed(0)  # the output gradients' seeds: the same figures on every run
    print(f"torch {torch.__version__}, device {DEV}, shape B,H,T,F,D = {SHAPE}, "
          f"TRITON_F32_DEFAULT={os.environ['TRITON_F32_DEFAULT']}", flush=True)
    if not CPU:  # the policy must route CUDA fp32 to fla under the switch
        assert ops.state_form(8, True, torch.float32, "gla") == "fla"
    failed = 0
    for state in ("decay", "gate", "additive rms", "feature gate", "delta", "gated delta"):
        LAUNCHES.clear()
        try:
            rows = compare(state)
        except Exception as e:  # one state's failure must not hide the others
            print(f"{state:13s} ERROR {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            failed += 1
            continue
        for st, name, diff, yard, ok in rows:
            print(f"{st:13s} {name:10s} max|fla-ours| {diff:.3e}   ours-vs-f64 {yard:.3e}   {'ok' if ok else 'MISMATCH'}",
                  flush=True)
            failed += not ok
        if CPU:
            fla_launches = sum(n for name, n in LAUNCHES.items() if "kernel" in name)
            print(f"{state:13s} interpreter launches of fla kernels: {fla_launches} ({len(LAUNCHES)} kernels)")
            failed += fla_launches == 0  # the kernels must have run, not a fallback
    print("all equal" if not failed else f"{failed} mismatches/errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
