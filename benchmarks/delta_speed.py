#!/usr/bin/env python
"""The delta rule's cost against the additive state, on the attention core alone (``ops``
functions on given features; no projections, no norm), fp32 CPU, 8 heads, feature size 32,
head dim 64 (the paper's base model):

- training: forward + backward of ``ops.delta_chunked`` (ungated and gated; beta and the log-gate
  require grad, as the module's would) against ``ops.causal_chunked``, batch 1, per length;
  ``--chunks`` times the delta forms at several chunk sizes;
- decoding: one ``ops.delta_step`` (out of place and in place, ungated and gated) against one
  ``ops.recurrent_step``, batch 8, under no_grad (the cost does not depend on the context).

Variants interleaved per length, the order alternating between repeats, medians reported.

    python -m benchmarks.delta_speed --threads 1 --clock cpu            # 1024, 4096
    python -m benchmarks.delta_speed --lengths 1024 --chunks 32,64,128
"""
import argparse
import json

import torch

from benchmarks.common import clock as timer
from benchmarks.core_timing import core_row, fwd_bwd, interleaved, projections
from fairseq_t2r import ops

H, F, D = 8, 32, 64


def inputs(B, T, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.relu(torch.randn(B, H, T, F, generator=g))
    k = torch.relu(torch.randn(B, H, T, F, generator=g))
    v = torch.randn(B, H, T, D, generator=g)
    beta = torch.sigmoid(torch.randn(B, H, T, generator=g))
    log_g = torch.nn.functional.logsigmoid(torch.randn(B, H, T, generator=g) + 3)  # the forget gate, in log space
    return [x.requires_grad_(grad) for x in (q, k, v, log_g, beta)]


def training(lengths, chunks, repeats, clock):
    rows = []
    for T in lengths:
        q, k, v, log_g, beta = inputs(1, T, seed=T)
        fns = {"projections": projections(T, H * D), "additive": fwd_bwd(lambda: ops.causal_chunked(q, k, v))}
        for C in chunks:
            fns[f"delta C={C}"] = fwd_bwd(lambda C=C: ops.delta_chunked(q, k, v, None, beta, chunk_size=C))
            fns[f"gated-delta C={C}"] = fwd_bwd(lambda C=C: ops.delta_chunked(q, k, v, log_g, beta, chunk_size=C))
        rows.append(core_row(T, fns, repeats, clock))
    return rows


def decoding(batch, repeats, clock):
    with torch.no_grad():
        q, k, v, log_g, beta = (x[:, :, :1] for x in inputs(batch, 1, grad=False))
        additive_state = (torch.rand(batch, H, F, D), torch.rand(batch, H, F) + 1)
        S = torch.randn(batch, H, F, D)
        fns = {
            "additive": lambda: ops.recurrent_step(q, k, v, state=additive_state),
            "delta": lambda: ops.delta_step(q, k, v, None, beta, state=S),
            "delta inplace": lambda: ops.delta_step(q, k, v, None, beta, state=S, inplace=True),
            "gated-delta": lambda: ops.delta_step(q, k, v, log_g, beta, state=S),
            "gated-delta inplace": lambda: ops.delta_step(q, k, v, log_g, beta, state=S, inplace=True),
        }
        for f in fns.values():
            f()
        per_call = 100  # one step is ~tens of microseconds: time 100 in a row
        ms = interleaved({n: (lambda f=f: [f() for _ in range(per_call)]) for n, f in fns.items()}, repeats, clock)
        us = {n: 1000 * m / per_call for n, m in ms.items()}
    print(f"step B={batch}: " + ", ".join(f"{n} {u:.1f} us ({u / us['additive']:.2f}x)" for n, u in us.items()), flush=True)
    return {"batch": batch, "us": us, "ratio": {n: u / us["additive"] for n, u in us.items()}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="1024,4096")
    p.add_argument("--chunks", default="64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="decoding batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clock = timer(a.clock)
    result = {
        "threads": a.threads,
        "clock": a.clock,
        "training": training([int(x) for x in a.lengths.split(",")], [int(x) for x in a.chunks.split(",")], a.repeats, clock),
        "decoding": decoding(a.batch, a.repeats, clock),
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
