#!/usr/bin/env python
"""--t2r-window through the real module (``T2RAttention``, what fairseq runs), side by side with
additive T2R in one run: one converted self-attention layer of the paper's base size (512 wide, 8
heads, feature size 32), fp32 CPU, one thread.

- decoding: per generated token, fairseq's incremental call (``attn(x, x, x, incremental_state=...)``,
  the folded one-token step; batch --batch, no_grad), timed over 100 consecutive tokens once the
  context reaches each of --contexts (the same decoding continues from one context to the next,
  so the state is the real one after that many tokens); the flat target: the step must not grow
  with the context. The incremental state's bytes per layer are read off fairseq's buffer. A
  feed-forward block (512 -> 2048 -> 512) of the same tokens is timed beside it: ``with ffn``
  is the ratio of a whole decoder layer (attention + FFN, without the output layer).
- training: forward + backward of the layer (batch 1) per length; additive T2R runs its fused relu
  op there, as in fairseq-train.

Arms: ``additive`` (the paper), ``gate`` (the gate from the key: the window arm's state),
``gate+window`` (W = --window), ``window-only`` (--t2r-window-branch window). Variants interleaved,
the order alternating between repeats, medians reported; ratios against ``additive``.

    nice python -m benchmarks.window_module_speed       # writes benchmarks/results/window_module_speed.json
"""
import json
import os
import sys

import torch
from fairseq.modules import MultiheadAttention

from benchmarks.common import clock as timer
from benchmarks.common import state_bytes
from benchmarks.core_timing import interleaved, window_parser
from fairseq_t2r.machine import machine
from fairseq_t2r.modules import T2RAttention

C, H, F = 512, 8, 32
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "window_module_speed.json")


def arms(window):
    gate = dict(state="gate", gate_source="key")
    return {"additive": ({}, None), "gate": (gate, None), f"gate+window W={window}": (gate, dict(window=window)),
            f"window-only W={window}": ({}, dict(window=window, window_branch="window"))}


def build(state, window, seed=0):
    torch.manual_seed(seed)
    return T2RAttention.from_softmax(MultiheadAttention(C, H, self_attention=True), "t2r", F,
                                     state_options=state or None, window_options=window)


def decoding(layers, batch, contexts, repeats, clock, per_call=100):
    g = torch.Generator().manual_seed(1)
    states = {n: {} for n in layers}
    done = 0
    rows = []
    with torch.no_grad():
        x = torch.randn(1, batch, C, generator=g)
        ffn = torch.nn.Sequential(torch.nn.Linear(C, 4 * C), torch.nn.ReLU(), torch.nn.Linear(4 * C, C))

        def steps(name, n):
            attn, st = layers[name], states[name]
            for _ in range(n):
                attn(x, x, x, incremental_state=st)

        for context in contexts:
            for name in layers:  # advance every arm to this context, untimed
                steps(name, context - done)
            done = context
            fns = {name: (lambda name=name: steps(name, per_call)) for name in layers}
            fns["ffn"] = lambda: [ffn(x) for _ in range(per_call)]
            ms = interleaved(fns, repeats, clock)
            done += per_call * repeats
            us = {n: 1000 * m / per_call for n, m in ms.items()}
            ffn_us = us.pop("ffn")
            ratio = {n: u / us["additive"] for n, u in us.items()}
            # the same layer with its feed-forward block (C -> 4C -> C) beside the attention
            layer = {n: (u + ffn_us) / (us["additive"] + ffn_us) for n, u in us.items()}
            memory = {n: state_bytes(states[n]) for n in layers}
            rows.append({"context": context, "us_per_token": us, "ratio": ratio, "ffn_us": ffn_us,
                         "layer_with_ffn_ratio": layer, "state_bytes_per_layer": memory})
            print(f"decode B={batch} context {context:>5} (ffn {ffn_us:.0f} us): " + ", ".join(
                f"{n} {u:.0f} us ({ratio[n]:.2f}x, with ffn {layer[n]:.2f}x, state {memory[n] / 1024:.0f} KiB)"
                for n, u in us.items()), flush=True)
    return {"batch": batch, "rows": rows}


def training(layers, lengths, repeats, clock):
    rows = []
    for T in lengths:
        x = torch.randn(T, 1, C, requires_grad=True)

        def train_step(attn):
            out, _ = attn(x, x, x)
            out.backward(torch.ones_like(out))

        fns = {n: (lambda a=a: train_step(a)) for n, a in layers.items()}
        for f in fns.values():
            f()
        ms = interleaved(fns, repeats, clock)
        ratio = {n: m / ms["additive"] for n, m in ms.items()}
        rows.append({"length": T, "ms": ms, "ratio": ratio})
        print(f"train T={T:>5}: " + ", ".join(f"{n} {m:.0f} ms ({ratio[n]:.2f}x)" for n, m in ms.items()), flush=True)
    return rows


def main():
    p = window_parser(__doc__, "cpu", RESULTS)
    p.add_argument("--skip-training", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clock = timer(a.clock)
    layers = {n: build(s, w) for n, (s, w) in arms(a.window).items()}
    result = {"benchmark": "window_module_speed", "command": "python -m benchmarks.window_module_speed " +
              " ".join(sys.argv[1:]), "machine": machine(), "threads": a.threads, "clock": a.clock, "window": a.window,
              "layer": {"embed_dim": C, "heads": H, "feature_dim": F}}
    for attn in layers.values():
        attn.eval()
    result["decoding"] = decoding(layers, a.batch, [int(c) for c in a.contexts.split(",")], a.repeats, clock)
    if not a.skip_training:
        for attn in layers.values():
            attn.train()
        result["training"] = training(layers, [int(t) for t in a.lengths.split(",")], a.repeats, clock)
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
