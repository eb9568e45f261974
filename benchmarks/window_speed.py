#!/usr/bin/env python
"""Window softmax + linear branch (``ops/window``) against additive T2R, on the attention core alone
(given q, k, v and features; no projections), fp32 CPU, 8 heads, feature size 32, head dim 64
(the paper's base model), side by side in one run:

- training: forward + backward of ``window.windowed_linear`` (W = --window) and of the window alone
  (``window.windowed_softmax``) against ``ops.causal_chunked``, batch 1, per length;
- decoding: one ``window.window_step`` against one ``ops.recurrent_step``, batch --batch, under
  no_grad, with the state as it is after CONTEXT tokens (the ring buffer full and wrapped), per
  context: the step's cost must not grow with it. The memory of each incremental state is printed.

A layer's ratio is estimated as (projections + core) / (projections + additive core), the
projections being the four 512 x 512 ones (q, k, v, out) of the same tokens. Variants interleaved,
the order alternating between repeats, medians reported.

    python -m benchmarks.window_speed                 # writes benchmarks/results/window_speed.json
"""
import json
import os
import sys

import torch

from benchmarks.common import clock as timer
from benchmarks.common import state_bytes
from benchmarks.core_timing import core_row, fwd_bwd, interleaved, projections, window_parser
from fairseq_t2r import ops
from fairseq_t2r.machine import machine
from fairseq_t2r.ops import window as win

H, F, D = 8, 32, 64
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "window_speed.json")


def tensors(B, T, grad, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g) * D ** -0.5
    k, v = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
    phi_q, phi_k = (torch.relu(torch.randn(B, H, T, F, generator=g)) for _ in range(2))
    return [x.requires_grad_(grad) for x in (q, k, v, phi_q, phi_k)]


def training(lengths, window, repeats, clock):
    rows = []
    log_factor = torch.zeros(H, requires_grad=True)
    for T in lengths:
        q, k, v, phi_q, phi_k = tensors(1, T, True, seed=T)
        fns = {"projections": projections(T, H * D),
               "additive": fwd_bwd(lambda: ops.causal_chunked(phi_q, phi_k, v)),
               f"window+linear W={window}": fwd_bwd(lambda: win.windowed_linear(q, k, v, phi_q, phi_k, window, log_factor)),
               f"window alone W={window}": fwd_bwd(lambda: win.windowed_softmax(q, k, v, window))}
        rows.append(core_row(T, fns, repeats, clock))
    return rows


def state_at(batch, window, context, g):
    """A window state as after ``context`` tokens (buffer full and wrapped when context >= W)."""
    s = win.init_state(batch, H, window, D, F)
    filled = min(context, window)
    s.k[:, :, :filled], s.v[:, :, :filled] = (torch.randn(batch, H, filled, D, generator=g) for _ in range(2))
    s.phi_k[:, :, :filled] = torch.rand(batch, H, filled, F, generator=g)
    s.valid[:, :filled] = True
    s.linear = (torch.rand(batch, H, F, D, generator=g), torch.rand(batch, H, F, generator=g) + 1)
    s.t = context
    return s


def decoding(batch, window, contexts, repeats, clock):
    rows = []
    g = torch.Generator().manual_seed(0)
    log_factor = torch.zeros(H)
    with torch.no_grad():
        q, k, v, phi_q, phi_k = (x[:, :, 0] for x in tensors(batch, 1, False))
        x1 = projections(batch, H * D, grad=False)
        for context in contexts:
            ws = state_at(batch, window, context, g)
            additive = (torch.rand(batch, H, F, D, generator=g), torch.rand(batch, H, F, generator=g) + 1)
            fns = {"projections": x1,
                   "additive": lambda: ops.recurrent_step(phi_q[:, :, None], phi_k[:, :, None], v[:, :, None],
                                                          state=additive),
                   f"window+linear W={window}": lambda: win.window_step(
                       phi_q[:, :, None], phi_k[:, :, None], v[:, :, None], state=ws, inplace=True, q=q[:, :, None],
                       k=k[:, :, None], log_factor=log_factor)}
            for f in fns.values():
                f()
            per_call = 100  # one step is tens of microseconds: time 100 in a row
            ms = interleaved({n: (lambda f=f: [f() for _ in range(per_call)]) for n, f in fns.items()}, repeats, clock)
            us = {n: 1000 * m / per_call for n, m in ms.items()}
            proj = us.pop("projections")
            ratio = {n: u / us["additive"] for n, u in us.items()}
            layer = {n: (proj + u) / (proj + us["additive"]) for n, u in us.items()}
            rows.append({"context": context, "us": us, "projections_us": proj, "ratio": ratio,
                         "layer_ratio_estimate": layer})
            print(f"step B={batch} context {context:>5}: projections {proj:.1f} us; core " + ", ".join(
                f"{n} {u:.1f} us ({ratio[n]:.2f}x, layer ~{layer[n]:.2f}x)" for n, u in us.items()), flush=True)
        memory = {"additive": state_bytes(additive), f"window+linear W={window}": state_bytes(
            [ws.k, ws.v, ws.phi_k, ws.valid, ws.linear])}
    print(f"incremental state per layer, batch {batch}: " + ", ".join(f"{n} {b / 1024:.1f} KiB" for n, b in memory.items()))
    return {"batch": batch, "rows": rows, "state_bytes_per_layer": memory}


def main():
    p = window_parser(__doc__, "wall", RESULTS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clock = timer(a.clock)
    result = {"benchmark": "window_speed", "command": "python -m benchmarks.window_speed " + " ".join(sys.argv[1:]),
              "machine": machine(), "threads": a.threads, "clock": a.clock, "window": a.window,
              "training": training([int(x) for x in a.lengths.split(",")], a.window, a.repeats, clock),
              "decoding": decoding(a.batch, a.window, [int(x) for x in a.contexts.split(",")], a.repeats, clock)}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
