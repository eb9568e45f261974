"""Timing helpers of the attention-core benchmarks (``delta_speed``, ``window_speed``,
``window_module_speed``): variants interleaved, the order alternating between repeats, so that the
shared machine's noise falls on every variant alike; medians reported."""
import argparse
import statistics

import torch


def interleaved(fns, repeats, clock):
    """{name: median milliseconds of one call}: every fn once per repeat, the order alternating."""
    times = {n: [] for n in fns}
    names = list(fns)
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = clock()
            fns[n]()
            times[n].append(clock() - t0)
    return {n: 1000 * statistics.median(t) for n, t in times.items()}


def fwd_bwd(f):
    """A call of ``f`` then a backward of its output against ones."""
    def run():
        out = f()
        out.backward(torch.ones_like(out))

    return run


def projections(T, width, grad=True):
    """What a layer adds around the core, to put the core's figures in proportion: the four
    width x width projections (q, k, v, out) of T tokens, forward + backward (forward alone without grad)."""
    x = torch.randn(T, width, requires_grad=grad)
    lin = [torch.nn.Linear(width, width) for _ in range(4)]
    return fwd_bwd(lambda: sum(m(x) for m in lin)) if grad else (lambda: [m(x) for m in lin])


def core_row(T, fns, repeats, clock):
    """Time ``fns`` (one of them "projections", one "additive") at length T: each core's ms, its ratio
    to the additive core, and a layer's ratio estimated as (projections + core) / (projections +
    additive core); printed and returned as one row."""
    for f in fns.values():
        f()
    ms = interleaved(fns, repeats, clock)
    proj = ms.pop("projections")
    ratio = {n: m / ms["additive"] for n, m in ms.items()}
    layer = {n: (proj + m) / (proj + ms["additive"]) for n, m in ms.items()}
    print(f"train T={T:>5}: projections {proj:.1f} ms; core " + ", ".join(
        f"{n} {m:.1f} ms ({ratio[n]:.2f}x, layer ~{layer[n]:.2f}x)" for n, m in ms.items()), flush=True)
    return {"length": T, "ms": ms, "projections_ms": proj, "ratio": ratio, "layer_ratio_estimate": layer}


def window_parser(doc: str, clock: str, results: str) -> argparse.ArgumentParser:
    """The options the window speed benchmarks share (``window_speed.py``, the core alone;
    ``window_module_speed.py``, the module): ``clock`` the default clock, ``results`` the JSON's."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--lengths", default="1024,4096,8192", help="training lengths")
    p.add_argument("--contexts", default="128,512,2048,8192", help="decoding contexts")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="decoding batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default=clock)
    p.add_argument("--json", default=results, help="write the figures here")
    return p
