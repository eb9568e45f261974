"""One step signature and one gate convention for every algorithm (ops/common.Step, ops.STEPS):
each algorithm folder has a step, each step's parameters are the declared ones (then keyword-only
options of its own), one generic loop drives every step through that one call against its
algorithm's naive reference (float64, 1e-8; in place and not), a step refuses the per-token
inputs it does not take, the same log-gate means the same forgetting to the gated and the delta
steps, and the gated and delta parallel forms share the argument order (per-token inputs after v
in the order log_g, beta; everything after them keyword-only)."""
import inspect
import pkgutil

import pytest
import torch
import torch.nn.functional as nnf

from fairseq_t2r import ops
from fairseq_t2r.ops import window as win

TOL = 1e-8
B, H, T, F, D = 2, 3, 9, 5, 4
DECLARED = list(inspect.signature(ops.Step.__call__).parameters.values())[1:]  # without self
KW = inspect.Parameter.KEYWORD_ONLY


def test_every_algorithm_folder_has_one_step():
    folders = {m.name for m in pkgutil.iter_modules(ops.__path__) if m.ispkg}
    assert folders == set(ops.STEPS)


@pytest.mark.parametrize("name", sorted(ops.STEPS))
def test_every_step_has_the_declared_signature(name):
    params = list(inspect.signature(ops.STEPS[name]).parameters.values())
    shared, extra = params[: len(DECLARED)], params[len(DECLARED):]
    assert [(p.name, p.kind) for p in shared] == [(p.name, p.kind) for p in DECLARED]
    for p, declared in zip(shared, DECLARED):
        if p.name == "eps":  # every step has one; its value is the algorithm's own floor
            assert p.default is not inspect.Parameter.empty
        else:
            assert p.default == declared.default, p.name
    assert all(p.kind is KW for p in extra), [p.name for p in extra]


def make(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k = nnf.relu(r(B, H, T, F)) + 0.1, nnf.relu(r(B, H, T, F))
    log_g = {"head": nnf.logsigmoid(r(B, H, T) + 1.0), "feature": nnf.logsigmoid(r(B, H, T, F) + 1.0)}
    beta = torch.sigmoid(r(B, H, T))
    return q, k, r(B, H, T, D), log_g, beta, (r(B, H, T, D) * D ** -0.5, r(B, H, T, D))


def same(a, b) -> bool:
    """Whether two states are the same objects (a pair of tensors: both of them)."""
    return all(x is y for x, y in zip(a, b)) if isinstance(a, tuple) else a is b


def run_steps(step, phi_q, phi_k, v, log_g=None, beta=None, inplace=False, **options):
    """Every step through the one call: token t's tensors (B, H, 1, *), the state it returned."""
    state, outs = None, []
    for t in range(T):
        token = lambda x, t=t: None if x is None else x[:, :, t : t + 1]  # noqa: E731
        before = state
        o, state = step(token(phi_q), token(phi_k), token(v), token(log_g), token(beta), state=state, inplace=inplace,
                        **{n: token(x) if n in ("q", "k") else x for n, x in options.items()})
        if before is not None:  # in place: the given state is the one returned; else a new one
            assert same(state, before) == inplace
        outs.append(o)
    return torch.cat(outs, 2)


def cases():
    q, k, v, log_g, beta, (sq, sk) = make()
    log_factor = torch.tensor([0.3, -1.2, 0.0], dtype=torch.float64)
    return [
        ("additive", dict(), ops.causal_reference(q, k, v)),
        ("gated", dict(log_g=log_g["head"]), ops.causal_gated_reference(q, k, v, log_g["head"])),
        ("gated", dict(log_g=log_g["feature"]), ops.causal_gated_reference(q, k, v, log_g["feature"])),
        ("delta", dict(beta=beta), ops.delta_reference(q, k, v, None, beta)),
        ("delta", dict(log_g=log_g["head"], beta=beta), ops.delta_reference(q, k, v, log_g["head"], beta)),
        ("window", dict(q=sq, k=sk, window=3, log_factor=log_factor),
         win.window_naive(sq, sk, v, q, k, 3, log_factor=log_factor)),
    ], (q, k, v)


@pytest.mark.parametrize("inplace", [False, True])
def test_one_loop_drives_every_step_to_its_reference(inplace):
    (all_cases, (q, k, v)) = cases()
    assert {name for name, _, _ in all_cases} == set(ops.STEPS)
    with torch.no_grad():
        for name, inputs, want in all_cases:
            got = run_steps(ops.STEPS[name], q, k, v, inplace=inplace, **inputs)
            assert (got - want).abs().max().item() <= TOL, (name, sorted(inputs))


def test_a_step_refuses_the_inputs_it_does_not_take():
    q, k, v, log_g, beta, (sq, sk) = (x[:, :, :1] if torch.is_tensor(x) else x for x in make())
    lg = log_g["head"][:, :, :1]
    b = beta[:, :, :1]
    with pytest.raises(ValueError, match="takes no log_g or beta"):
        ops.recurrent_step(q, k, v, lg, b)
    with pytest.raises(ValueError, match="takes no beta"):
        ops.gated_step(q, k, v, lg, b)
    with pytest.raises(ValueError, match="needs beta"):
        ops.delta_step(q, k, v, lg)
    with pytest.raises(ValueError, match="takes no log_g"):
        ops.window_step(q, k, v, lg, q=sq[:, :, :1], k=sk[:, :, :1], window=2, log_factor=torch.zeros(H))


def test_one_log_gate_means_the_same_forgetting_to_gated_and_delta():
    """One-hot keys, each used once, and beta = 1: the delta rule's erase finds nothing to erase
    (S_{i-1}^T k_i = 0), so it is the gated state's update S_i = g_i S_{i-1} + k_i v_i^T, read
    unnormalised; unit-norm queries make its L2 norm a no-op. The same ``log_g`` tensor given to
    both steps must then give the same outputs (a delta form reading gates instead of log-gates,
    or the reverse, would not)."""
    q, _, v, log_g, _, _ = make(1)
    q = q / q.norm(dim=-1, keepdim=True)
    k = torch.eye(F, dtype=torch.float64)[torch.arange(T) % F].expand(B, H, T, F)[:, :, :F]
    q, v, lg = q[:, :, :F], v[:, :, :F], log_g["head"][:, :, :F]
    state_g = state_d = None
    for t in range(F):
        tok = slice(t, t + 1)
        out_g, state_g = ops.gated_step(q[:, :, tok], k[:, :, tok], v[:, :, tok], lg[:, :, tok], state=state_g,
                                        normalize=False)
        out_d, state_d = ops.delta_step(q[:, :, tok], k[:, :, tok], v[:, :, tok], lg[:, :, tok],
                                        torch.ones(B, H, 1, dtype=torch.float64), state=state_d)
        assert (out_g - out_d).abs().max().item() <= TOL, t
    assert (state_g[0] - state_d).abs().max().item() <= TOL


PARALLEL = {
    ("log_g",): [ops.causal_gated, ops.causal_gated_fla, ops.causal_gated_reference, ops.gated_parallel],
    ("log_g", "beta"): [ops.delta_chunked, ops.delta_fla, ops.delta_reference, ops.delta_parallel],
}
AFTER = {"eps", "chunk_size", "initial_state", "return_state", "normalize"}


@pytest.mark.parametrize("per_token", sorted(PARALLEL))
def test_gated_and_delta_parallel_forms_share_the_argument_order(per_token):
    for form in PARALLEL[per_token]:
        params = list(inspect.signature(form).parameters.values())
        positional = [p.name for p in params if p.kind is not KW]
        assert positional == ["phi_q", "phi_k", "v", *per_token], form.__name__
        assert {p.name for p in params if p.kind is KW} <= AFTER, form.__name__
    chunked, fla = PARALLEL[per_token][:2]  # the fla glue: the same signature as our chunked form
    assert list(inspect.signature(chunked).parameters) == list(inspect.signature(fla).parameters)
