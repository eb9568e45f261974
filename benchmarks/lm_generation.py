#!/usr/bin/env python
"""Generation speed and state memory: softmax ``transformer_lm`` vs its T2R twin.

Both models have the same size and the same weights for every shared tensor (the softmax state
dict is loaded into the T2R model, whose checkpoint hook fills the new feature-map tensors).
For each context length the incremental state is filled with ``ctx`` tokens, then single-token
decoding steps are timed exactly as fairseq's SequenceGenerator runs them:
``model.decoder(tokens, incremental_state=...)`` + ``get_normalized_probs(log_probs=True)``.

Filling the state ("prefill"): fairseq's TransformerDecoder keeps only the last token when it is
given an incremental_state, so the prefix is pushed through the decoder layers directly, in
parallel multi-token calls (chunks of ``--prefill-chunk`` tokens, one call for contexts up to
that size) with a causal mask. MultiheadAttention concatenates the chunk's keys/values to its
``prev_key``/``prev_value`` cache (B, H, T, D); T2RAttention continues its (S, z) sums. A check at
the start verifies that prefill + one step gives the same log-probs as a full parallel forward.

Softmax and T2R are measured side by side in one process, interleaved per context length and
per repeat (the order alternates), and medians are reported.

    python benchmarks/lm_generation.py            # default: 6 layers, 512 dims, contexts 128..4096
    python benchmarks/lm_generation.py --quick    # tiny model, contexts 16,64 (smoke test)
"""
import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from common import machine  # noqa: E402

import fairseq_t2r  # noqa: E402,F401  (registers t2r_transformer_lm)
from fairseq.data import Dictionary  # noqa: E402
from fairseq.models import (  # noqa: E402
    ARCH_CONFIG_REGISTRY,
    ARCH_MODEL_NAME_REGISTRY,
    ARCH_MODEL_REGISTRY,
    MODEL_DATACLASS_REGISTRY,
)


class FakeTask:
    def __init__(self, dictionary):
        self.source_dictionary = dictionary
        self.target_dictionary = dictionary
        self.dictionary = dictionary


def make_dictionary(vocab: int) -> Dictionary:
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    return d


def build(arch: str, task, a, max_positions: int):
    args = argparse.Namespace(
        arch=arch,
        decoder_layers=a.layers,
        decoder_embed_dim=a.dim,
        decoder_input_dim=a.dim,
        decoder_output_dim=a.dim,
        decoder_attention_heads=a.heads,
        decoder_ffn_embed_dim=a.ffn,
        tokens_per_sample=max_positions,
        max_target_positions=max_positions,
        add_bos_token=False,
        tpu=False,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        t2r_feature_map=a.feature_map,
        t2r_feature_dim=a.feature_dim,
    )
    ARCH_CONFIG_REGISTRY[arch](args)
    # options the arch fn leaves unset: the model config dataclass defaults (as fairseq-train)
    for f in dataclasses.fields(MODEL_DATACLASS_REGISTRY[ARCH_MODEL_NAME_REGISTRY[arch]]):
        if f.name.startswith("_") or hasattr(args, f.name):
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        setattr(args, f.name, None if isinstance(default, str) and default.startswith("${") else default)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, task)
    return model.eval().float()


def state_bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def copy_state(state):
    """Two-level copy: attention modules replace (never modify) the tensors in their buffer."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}


def prefill(decoder, tokens, incremental_state, chunk: int):
    """Push ``tokens`` (B, T) through the decoder layers into ``incremental_state``, in parallel
    calls of ``chunk`` tokens (TransformerDecoder.forward would keep only the last token)."""
    B, T = tokens.shape
    positions = decoder.embed_positions(tokens) if decoder.embed_positions is not None else None
    for start in range(0, T, chunk):
        end = min(T, start + chunk)
        x = decoder.embed_scale * decoder.embed_tokens(tokens[:, start:end])
        if decoder.project_in_dim is not None:
            x = decoder.project_in_dim(x)
        if positions is not None:
            x = x + positions[:, start:end]
        if decoder.layernorm_embedding is not None:
            x = decoder.layernorm_embedding(x)
        x = decoder.dropout_module(x).transpose(0, 1)
        # causal mask of the chunk's queries over (cached prefix + chunk) keys
        mask = torch.full((end - start, end), float("-inf")).triu_(start + 1)
        for layer in decoder.layers:
            x, _, _ = layer(x, None, None, incremental_state, self_attn_mask=mask, self_attn_padding_mask=None)


def step(model, tokens, incremental_state):
    """One decoding step as SequenceGenerator.forward_decoder runs it (batch of one model)."""
    out = model.decoder(tokens, encoder_out=None, incremental_state=incremental_state)
    lprobs = model.get_normalized_probs((out[0][:, -1:, :], out[1]), log_probs=True, sample=None)
    return lprobs[:, -1, :]


def check_prefill(model, tokens, chunk):
    """prefill(T-1 tokens) + one step must equal the full parallel forward's last position."""
    state = {}
    prefill(model.decoder, tokens[:, :-1], state, chunk)
    inc = step(model, tokens, state)
    full = model.get_normalized_probs(model.decoder(tokens), log_probs=True)[:, -1, :]
    return (inc - full).abs().max().item()


def time_steps(model, base_tokens, base_state, ctx, steps, warmup):
    tokens = base_tokens.clone()
    state = copy_state(base_state)
    times = []
    for i in range(warmup + steps):
        n = ctx + i + 1
        t0 = time.perf_counter()
        lprobs = step(model, tokens[:, :n], state)
        tokens[:, n] = lprobs.argmax(-1)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return times




def plot(rows, path, title):
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq sets the root logger to DEBUG
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = [r["context"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(ctx, [r["softmax_ms_per_token"] for r in rows], "o-", label="softmax (KV cache)")
    ax1.plot(ctx, [r["t2r_ms_per_token"] for r in rows], "s-", label="T2R (recurrent state)")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("context length (tokens)")
    ax1.set_ylabel("ms / token (median)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("time per generated token")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(ctx, [r["softmax_state_MB"] for r in rows], "o-", label="softmax (KV cache)")
    ax2.plot(ctx, [r["t2r_state_MB"] for r in rows], "s-", label="T2R (S, z)")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("context length (tokens)")
    ax2.set_ylabel("incremental state (MB, log)")
    ax2.set_title("decoder state memory")
    ax2.legend()
    ax2.grid(alpha=0.3, which="both")
    for ax in (ax1, ax2):
        ax.set_xticks(ctx)
        ax.set_xticklabels([str(c) for c in ctx])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contexts", default="128,256,512,1024,2048,4096", help="comma-separated context lengths")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--feature-map", default="t2r")
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--steps", type=int, default=16, help="timed decoding steps per repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prefill-chunk", type=int, default=1024, help="tokens per parallel prefill call")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny model, contexts 16,64, few repeats (smoke test)")
    p.add_argument("--out", default=None,
                   help="output prefix for .json/.png (default benchmarks/results/lm_generation; "
                        "--quick writes nothing unless given)")
    a = p.parse_args()
    if a.quick:
        a.layers, a.dim, a.heads, a.ffn, a.vocab = 2, 64, 4, 128, 1000
        a.steps, a.warmup, a.repeats = 4, 1, 2
        if a.contexts == p.get_default("contexts"):
            a.contexts = "16,64"
    out = a.out if a.out is not None else (None if a.quick else os.path.join(REPO, "benchmarks", "results", "lm_generation"))
    contexts = sorted(int(c) for c in a.contexts.split(","))

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    mach = machine()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (cpu_count {os.cpu_count()}), "
          f"{mach['platform']}, {mach['cpu']}", flush=True)

    dictionary = make_dictionary(a.vocab)
    task = FakeTask(dictionary)
    max_pos = max(contexts) + a.warmup + a.steps + 8
    soft = build("transformer_lm", task, a, max_pos)
    t2r = build("t2r_transformer_lm", task, a, max_pos)
    t2r.load_state_dict(copy.deepcopy(soft.state_dict()))  # fills the feature-map tensors itself
    n_soft = sum(x.numel() for x in soft.parameters())
    n_t2r = sum(x.numel() for x in t2r.parameters())
    print(f"model: {a.layers} layers, {a.dim} dims, {a.heads} heads, FFN {a.ffn}, vocab {len(dictionary)}; "
          f"params softmax {n_soft / 1e6:.2f}M, T2R {n_t2r / 1e6:.2f}M "
          f"(+{n_t2r - n_soft} feature map, {a.feature_map} k={a.feature_dim}); batch {a.batch}", flush=True)

    models = {"softmax": soft, "t2r": t2r}
    rows = []
    with torch.no_grad():
        probe = torch.randint(dictionary.nspecial, len(dictionary), (2, 33))
        checks = {name: check_prefill(m, probe, chunk=8) for name, m in models.items()}
        print("prefill check (max |log-prob diff| vs full forward): "
              + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()), flush=True)

        print(f"\n{'context':>8} {'softmax ms/tok':>15} {'t2r ms/tok':>11} {'speedup':>8} "
              f"{'softmax state MB':>17} {'t2r state MB':>13}", flush=True)
        for ctx in contexts:
            base_tokens = torch.full((a.batch, ctx + a.warmup + a.steps + 1), dictionary.pad(), dtype=torch.long)
            base_tokens[:, :ctx] = torch.randint(dictionary.nspecial, len(dictionary), (a.batch, ctx))
            base, nbytes, prefill_s, times = {}, {}, {}, {n: [] for n in models}
            for name, m in models.items():
                base[name] = {}
                t0 = time.perf_counter()
                prefill(m.decoder, base_tokens[:, :ctx], base[name], a.prefill_chunk)
                prefill_s[name] = time.perf_counter() - t0
                nbytes[name] = state_bytes(base[name])
            for r in range(a.repeats):
                order = list(models) if r % 2 == 0 else list(models)[::-1]
                for name in order:
                    times[name] += time_steps(models[name], base_tokens, base[name], ctx, a.steps, a.warmup)
            ms = {n: 1000 * statistics.median(t) for n, t in times.items()}
            row = {
                "context": ctx,
                "softmax_ms_per_token": ms["softmax"],
                "t2r_ms_per_token": ms["t2r"],
                "speedup": ms["softmax"] / ms["t2r"],
                "softmax_state_MB": nbytes["softmax"] / 2**20,
                "t2r_state_MB": nbytes["t2r"] / 2**20,
                "softmax_state_bytes": nbytes["softmax"],
                "t2r_state_bytes": nbytes["t2r"],
                "softmax_prefill_s": prefill_s["softmax"],
                "t2r_prefill_s": prefill_s["t2r"],
                "softmax_step_ms": [1000 * t for t in times["softmax"]],
                "t2r_step_ms": [1000 * t for t in times["t2r"]],
            }
            rows.append(row)
            print(f"{ctx:>8} {row['softmax_ms_per_token']:>15.2f} {row['t2r_ms_per_token']:>11.2f} "
                  f"{row['speedup']:>7.2f}x {row['softmax_state_MB']:>17.2f} {row['t2r_state_MB']:>13.2f}",
                  flush=True)
            del base

    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        result = {
            "benchmark": "lm_generation: per-token incremental decoding, softmax transformer_lm vs T2R twin",
            "machine": mach,
            "config": {
                "layers": a.layers, "dim": a.dim, "heads": a.heads, "ffn": a.ffn, "vocab": len(dictionary),
                "feature_map": a.feature_map, "feature_dim": a.feature_dim, "batch": a.batch,
                "steps": a.steps, "warmup": a.warmup, "repeats": a.repeats, "prefill_chunk": a.prefill_chunk,
                "dtype": "float32", "weights": "random (seed %d), shared tensors identical" % a.seed,
                "params_softmax": n_soft, "params_t2r": n_t2r,
                "timed": "model.decoder(tokens, incremental_state) + get_normalized_probs(log_probs=True) + argmax",
                "statistic": "median over repeats x steps of per-step wall time",
            },
            "prefill_check_max_abs_diff": checks,
            "results": rows,
        }
        with open(out + ".json", "w") as f:
            json.dump(result, f, indent=1)
        title = (f"{a.layers}L/{a.dim}d/{a.heads}h LM, batch {a.batch}, fp32, {mach['cpu']} x{mach['threads']} threads, "
                 f"torch {torch.__version__}; T2R k={a.feature_dim}")
        plot(rows, out + ".png", title)
        print(f"\nwrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
