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

Long softmax contexts: a real prefill of the softmax model costs O(ctx^2) and minutes at 8192,
so above ``--softmax-prefill-max`` tokens its KV cache is synthesised instead: random
``prev_key``/``prev_value`` of exactly the shape, dtype and dict layout a real prefill leaves
(checked at start-up against a real prefill); a softmax step's cost depends on the cache's size,
not its values. T2R is always prefilled for real (linear in ctx).

Variants, all timed side by side in one process, interleaved per context and per repeat:
- ``softmax``: fairseq's transformer_lm (KV cache);
- ``t2r``: the T2R twin (merged projections: feature MLP folded into q/k proj);
- ``t2r_unmerged``: the same model and state with ``merge_projections = False``;
- ``floor_none``: the same model with every self-attention removed (returns its input at no
  cost; same embeddings, layer norms, FFNs, output projection): what a token costs without any
  attention at all;
- ``floor_proj``: the same, but the self-attention keeps the two matmuls any T2R step has to do
  (one fused projection to [phi(q) pre-activations | phi(k) pre-activations | v, 1] and out_proj)
  and nothing else: what stands above it is the recurrent state update and read-out and our
  Python.

The state updates other than the additive one are timed by ``lm_states.py`` (the ``--states``
sweep), on the measurement code here.

    python -m benchmarks.lm_generation            # default: 6 layers, 512 dims, contexts 128..8192
    python -m benchmarks.lm_generation --quick    # tiny model, contexts 16,64 (smoke test)
"""
import argparse
import copy
import dataclasses
import json
import os
import statistics
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from fairseq.models import (  # noqa: E402
    ARCH_CONFIG_REGISTRY,
    ARCH_MODEL_NAME_REGISTRY,
    ARCH_MODEL_REGISTRY,
    MODEL_DATACLASS_REGISTRY,
)

import fairseq_t2r.models  # noqa: E402,F401  (registers t2r_transformer_lm)
from benchmarks.common import (  # noqa: E402
    FakeTask,
    add_model_options,
    clock,
    make_dictionary,
    pyplot,
    set_up_torch,
    state_bytes,
)
from benchmarks.report import checked, reported, table


def build(arch: str, task, a, max_positions: int, **options):
    """The model of ``arch`` at the size ``a`` asks for; ``options`` (e.g. t2r_state) set before the
    arch's defaults."""
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
        **options,
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


def copy_state(state):
    """Deep copy of an incremental state (T2R updates its state tensors in place)."""
    return {k: ({n: (t.clone() if torch.is_tensor(t) else t) for n, t in v.items()} if isinstance(v, dict) else v)
            for k, v in state.items()}


class NoAttention(torch.nn.Module):
    """A self-attention that returns its input at no cost (the ``floor_none`` variant)."""

    def forward(self, query, key=None, value=None, **kwargs):
        return query, None

    def _get_input_buffer(self, incremental_state):
        return {}


class ProjectionsOnly(torch.nn.Module):
    """A self-attention that does only the two matmuls a T2R generation step cannot avoid: one
    fused projection x -> [s W_h W_q x | W_h W_k x | per head (v, 1)] (the folded feature maps,
    as merged T2R does) and out_proj; no recurrent state (the ``floor_proj`` variant). Built from
    the T2R module's own weights, independently of its code."""

    def __init__(self, attn):
        super().__init__()
        H, D, C = attn.num_heads, attn.head_dim, attn.embed_dim
        with torch.no_grad():
            fm_w, fm_b = attn.feature_map.linear_part()
            wq = (torch.matmul(fm_w, attn.q_proj.weight.view(H, D, C)) * attn.scaling).reshape(-1, C)
            wk = torch.matmul(fm_w, attn.k_proj.weight.view(H, D, C)).reshape(-1, C)
            wv = torch.cat([attn.v_proj.weight.view(H, D, C), attn.v_proj.weight.new_zeros(H, 1, C)], 1).view(-1, C)
            self.weight = torch.nn.Parameter(torch.cat([wq, wk, wv], 0).contiguous())
            self.bias = torch.nn.Parameter(torch.randn(self.weight.size(0)))
        self.out_proj = attn.out_proj
        self.embed_dim = C

    def forward(self, query, key=None, value=None, **kwargs):
        y = torch.addmm(self.bias, query[0], self.weight.t())
        return self.out_proj(y[:, : self.embed_dim].unsqueeze(0)), None

    def _get_input_buffer(self, incremental_state):
        return {}


def with_self_attention(model, make):
    m = copy.deepcopy(model)
    for layer in m.decoder.layers:
        layer.self_attn = make(layer.self_attn)
    return m


def set_merge(model, merge: bool):
    for mod in model.modules():
        if hasattr(mod, "merge_projections"):
            mod.merge_projections = merge


def synthetic_softmax_state(model, batch, ctx):
    """The KV cache a real prefill of ``ctx`` tokens leaves, filled with random values."""
    state = {}
    for layer in model.decoder.layers:
        attn = layer.self_attn
        shape = (batch, attn.num_heads, ctx, attn.head_dim)
        buf = {"prev_key": torch.randn(shape), "prev_value": torch.randn(shape), "prev_key_padding_mask": None}
        attn._set_input_buffer(state, buf)
    return state


def describe_state(state):
    return sorted((name, tuple(t.shape) if torch.is_tensor(t) else None, str(t.dtype) if torch.is_tensor(t) else None)
                  for buf in state.values() for name, t in buf.items())


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


CLOCK = time.perf_counter


def time_steps(model, base_tokens, base_state, ctx, steps, warmup):
    tokens = base_tokens.clone()
    state = copy_state(base_state) if base_state is not None else {}
    times = []
    for i in range(warmup + steps):
        n = ctx + i + 1
        t0 = CLOCK()
        lprobs = step(model, tokens[:, :n], state)
        tokens[:, n] = lprobs.argmax(-1)
        dt = CLOCK() - t0
        if i >= warmup:
            times.append(dt)
    return times




STYLE = {
    "softmax": ("o-", "softmax (KV cache)"),
    "t2r": ("s-", "T2R (recurrent state, merged projections)"),
    "t2r_unmerged": ("s--", "T2R, unmerged projections"),
    "floor_proj": ("^:", "floor: projections only, no state"),
    "floor_none": ("v:", "floor: no attention at all"),
}


def plot(rows, path, title):
    plt = pyplot()
    from matplotlib import ticker

    ctx = [r["context"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for name, (style, label) in STYLE.items():
        if all(name in r["ms_per_token"] for r in rows):
            ax1.plot(ctx, [r["ms_per_token"][name] for r in rows], style, label=label)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("context length (tokens)")
    ax1.set_ylabel("ms / token (median, log)")
    ax1.set_title("time per generated token")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3, which="both")
    if all(r["softmax_state_bytes"] is not None for r in rows):  # measured (not in a --states run)
        ax2.plot(ctx, [r["softmax_state_MB"] for r in rows], "o-", label="softmax (KV cache)")
    ax2.plot(ctx, [r["t2r_state_MB"] for r in rows], "s-", label="T2R [S | z]")
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
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


STATEFUL = {"softmax": "softmax", "t2r": "t2r", "t2r_unmerged": "t2r"}  # variant -> whose state it uses


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contexts", default="128,512,1024,2048,4096,8192", help="comma-separated context lengths")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=6)
    add_model_options(p)
    p.add_argument("--variants", default="softmax,t2r,t2r_unmerged,floor_proj,floor_none",
                   help="which models to time (see the module docstring)")
    p.add_argument("--steps", type=int, default=8, help="timed decoding steps per repeat")
    p.add_argument("--softmax-steps", type=int, default=4, help="timed steps per repeat for softmax at contexts "
                   "above --softmax-prefill-max (a step there costs up to ~1 s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each repeat")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--prefill-chunk", type=int, default=1024, help="tokens per parallel prefill call")
    p.add_argument("--softmax-prefill-max", type=int, default=1024,
                   help="above this context the softmax KV cache is synthesised (see the docstring)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: perf_counter (the figure to report); cpu: process CPU time, steadier on a "
                        "shared machine for comparing variants with --threads 1")
    p.add_argument("--quick", action="store_true", help="tiny model, contexts 16,64, few repeats (smoke test)")
    p.add_argument("--out", default=None,
                   help="output prefix for .json/.png (default benchmarks/results/lm_generation; --quick "
                        "writes nothing unless given)")
    return p


def parse_args(argv, p=None, out_name="lm_generation"):
    """The options of ``p`` (default build_parser()), with --quick's tiny model; ``a.contexts`` (sorted
    ints), ``a.variants`` (a list) and ``a.out`` (the output prefix, default
    benchmarks/results/OUT_NAME; None: write nothing) resolved. ``a.states``: None here (lm_states.py
    sets it)."""
    p = p or build_parser()
    a = p.parse_args(argv)
    a.states = getattr(a, "states", None)
    if a.quick:
        a.layers, a.dim, a.heads, a.ffn, a.vocab = 2, 64, 4, 128, 1000
        a.steps, a.softmax_steps, a.warmup, a.repeats = 4, 2, 1, 2
        if a.contexts == p.get_default("contexts"):
            a.contexts = "16,64"
        a.softmax_prefill_max = min(a.softmax_prefill_max, 16)
    if a.out is None and not a.quick:
        a.out = os.path.join(REPO, "benchmarks", "results", out_name)
    a.contexts = sorted(int(c) for c in a.contexts.split(","))
    a.variants = list(dict.fromkeys(v for v in a.variants.split(",") if v))
    return a


def set_up(a):
    """Clock, threads and seed as asked; returns the machine description (also printed)."""
    global CLOCK
    CLOCK = clock(a.clock)
    return set_up_torch(a)


def build_models(a, dictionary):
    """The softmax model, its T2R twin (same weights) and the floors asked for: ({variant: model}
    in the table's order, softmax, t2r, (softmax params, T2R params)); the model is printed."""
    task = FakeTask(dictionary)
    max_pos = max_positions(a)
    soft = build("transformer_lm", task, a, max_pos)
    t2r = build("t2r_transformer_lm", task, a, max_pos)
    t2r.load_state_dict(copy.deepcopy(soft.state_dict()))  # fills the feature-map tensors itself
    n_soft = sum(x.numel() for x in soft.parameters())
    n_t2r = sum(x.numel() for x in t2r.parameters())
    print(f"model: {a.layers} layers, {a.dim} dims, {a.heads} heads, FFN {a.ffn}, vocab {len(dictionary)}; "
          f"params softmax {n_soft / 1e6:.2f}M, T2R {n_t2r / 1e6:.2f}M "
          f"(+{n_t2r - n_soft} feature map, {a.feature_map} k={a.feature_dim}); batch {a.batch}", flush=True)
    models = {"softmax": soft, "t2r": t2r, "t2r_unmerged": t2r}
    if "floor_none" in a.variants:
        models["floor_none"] = with_self_attention(t2r, lambda attn: NoAttention())
    if "floor_proj" in a.variants:
        models["floor_proj"] = with_self_attention(t2r, ProjectionsOnly)
    return {k: m for k, m in models.items() if k in a.variants}, soft, t2r, (n_soft, n_t2r)


def max_positions(a):
    return max(a.contexts) + a.warmup + a.steps + 8


def check_prefills(sources, dictionary):
    """Prefill + one step == the full forward for every model of ``sources`` ({name: model},
    softmax first), and the synthetic softmax cache has a real prefill's layout: {model: max
    |log-prob diff|} (also printed)."""
    soft = sources["softmax"]
    probe = torch.randint(dictionary.nspecial, len(dictionary), (2, 33))
    checks = {name: check_prefill(m, probe, chunk=8) for name, m in sources.items()}
    real = {}
    prefill(soft.decoder, probe[:, :9], real, 8)
    synth_ok = describe_state(real) == describe_state(synthetic_softmax_state(soft, 2, 9))
    assert synth_ok, "synthetic softmax cache differs from a real prefill's"
    print("prefill check (max |log-prob diff| vs full forward): "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
          + "; synthetic softmax cache has the real one's layout", flush=True)
    return checks


def prefill_states(sources, models, tokens, ctx, a):
    """The state of each model in ``sources`` ({name: model}) that a timed variant reads, filled with
    the first ``ctx`` of ``tokens`` (B, >ctx): ({name: state}, {name: bytes}, {name: seconds}). The
    softmax cache above --softmax-prefill-max is synthesised (see the module docstring)."""
    base, nbytes, prefill_s = {}, {}, {}
    for name, m in sources.items():
        if not any(STATEFUL.get(v, v) == name for v in models):
            continue
        t0 = time.perf_counter()
        if name == "softmax" and ctx > a.softmax_prefill_max:
            base[name] = synthetic_softmax_state(m, a.batch, ctx)
        else:
            base[name] = {}
            prefill(m.decoder, tokens[:, :ctx], base[name], a.prefill_chunk)
        prefill_s[name] = time.perf_counter() - t0
        nbytes[name] = state_bytes(base[name])
    return base, nbytes, prefill_s


def time_variants(models, t2r, base, tokens, ctx, a):
    """{variant: [seconds per step]}: every variant's steps from its state in ``base``, the variants
    interleaved per repeat, the order alternating."""
    times = {n: [] for n in models}
    for r in range(a.repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for name in order:
            steps = a.softmax_steps if name == "softmax" and ctx > a.softmax_prefill_max else a.steps
            set_merge(t2r, name != "t2r_unmerged")
            st = base.get(STATEFUL.get(name, name))
            times[name] += time_steps(models[name], tokens, st, ctx, steps, a.warmup)
    set_merge(t2r, True)
    return times


def context_row(ctx, times, nbytes, prefill_s, a):
    """The table's row of one context: medians, state sizes, ratios."""
    ms = {n: 1000 * statistics.median(t) for n, t in times.items()}
    row = {
        "context": ctx,
        "ms_per_token": ms,
        "softmax_state_MB": nbytes.get("softmax", 0) / 2**20,
        "t2r_state_MB": nbytes.get("t2r", 0) / 2**20,
        "softmax_state_bytes": nbytes.get("softmax"),
        "t2r_state_bytes": nbytes.get("t2r"),
        "softmax_cache": "synthetic" if ctx > a.softmax_prefill_max else "prefilled",
        "prefill_s": prefill_s,
        "step_ms": {n: [1000 * t for t in ts] for n, ts in times.items()},
    }
    if "softmax" in ms and "t2r" in ms:
        row["speedup"] = ms["softmax"] / ms["t2r"]
    if "t2r" in ms:
        for f in ("floor_none", "floor_proj"):
            if f in ms:
                row[f"t2r_over_{f}"] = ms["t2r"] / ms[f]
        if "t2r_unmerged" in ms:
            row["merged_speedup"] = ms["t2r_unmerged"] / ms["t2r"]
    states = [v for v, _, _ in a.states[1:] if v in ms] if a.states else []
    if states:
        row["state_bytes"] = {v: nbytes.get(v) for v in ["t2r"] + states}
        row["over_additive"] = {v: ms[v] / ms["t2r"] for v in states}
    return row


def measure_context(models, sources, dictionary, ctx, a, kept):
    """Prefill, time and print one context's row; keeps T2R's (tokens, state) at the first and the
    last context in ``kept`` for flatness()."""
    tokens = torch.full((a.batch, ctx + a.warmup + a.steps + 1), dictionary.pad(), dtype=torch.long)
    tokens[:, :ctx] = torch.randint(dictionary.nspecial, len(dictionary), (a.batch, ctx))
    base, nbytes, prefill_s = prefill_states(sources, models, tokens, ctx, a)
    if "t2r" in base and ctx in (a.contexts[0], a.contexts[-1]):
        kept[ctx] = (tokens, base["t2r"])  # 3 MB each
    row = context_row(ctx, time_variants(models, sources["t2r"], base, tokens, ctx, a), nbytes, prefill_s, a)
    cells = " ".join(f"{row['ms_per_token'][v]:>{max(13, len(v))}.2f}" for v in models)
    # a --states run times no softmax model: its cache is not measured (not 0 MB)
    soft = "-" if row["softmax_state_bytes"] is None else f"{row['softmax_state_MB']:.2f}"
    print(f"{ctx:>8} {cells}  {soft:>21} {row['t2r_state_MB']:>7.2f}", flush=True)
    return row


def measure(models, soft, t2r, dictionary, a, states=None):
    """The checks, the table's rows and T2R's flatness (None with one context or without T2R);
    ``states``: {variant: model} of the other state updates."""
    sources = {"softmax": soft, "t2r": t2r, **(states or {})}
    with torch.no_grad():
        checks = check_prefills(sources, dictionary)
        header = " ".join(f"{v:>{max(13, len(v))}}" for v in models)
        print(f"\n{'context':>8} {header}  (ms/token)  {'softmax MB':>10} {'t2r MB':>7}", flush=True)
        kept = {}  # context -> (tokens, T2R state as prefilled), first and last context
        rows = [measure_context(models, sources, dictionary, ctx, a, kept) for ctx in a.contexts]
        flat = None
        if "t2r" in models and len(a.contexts) > 1:
            flat = flatness(t2r, kept, a)
            print(f"T2R side by side, contexts interleaved: {flat['ms'][0]:.2f} ms at {flat['contexts'][0]}, "
                  f"{flat['ms'][1]:.2f} ms at {flat['contexts'][1]}", flush=True)
    return checks, rows, flat


def run_config(a, dictionary, models, counts, wall):
    n_soft, n_t2r = counts
    return {
        "layers": a.layers, "dim": a.dim, "heads": a.heads, "ffn": a.ffn, "vocab": len(dictionary),
        "feature_map": a.feature_map, "feature_dim": a.feature_dim, "batch": a.batch,
        "steps": a.steps, "softmax_steps_synthetic": a.softmax_steps, "warmup": a.warmup, "repeats": a.repeats,
        "prefill_chunk": a.prefill_chunk, "softmax_prefill_max": a.softmax_prefill_max,
        "variants": list(models), "dtype": "float32",
        "weights": "random (seed %d), shared tensors identical" % a.seed,
        "params_softmax": n_soft, "params_t2r": n_t2r,
        "timed": "model.decoder(tokens, incremental_state) + get_normalized_probs(log_probs=True) + argmax",
        "statistic": f"median over repeats x steps of per-step {a.clock} time",
        "clock": a.clock,
        "wall_s": wall,
    }


def save(result, a, plot_rows):
    """OUT.json and OUT.png (``a.out`` the prefix; ``plot_rows(rows, path, title)`` draws it)."""
    out, mach = a.out, result["machine"]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    title = (f"{a.layers}L/{a.dim}d/{a.heads}h LM, batch {a.batch}, fp32, {mach['cpu']} x{mach['threads']} threads, "
             f"torch {torch.__version__}; T2R k={a.feature_dim}")
    plot_rows(result["results"], out + ".png", title)
    print(f"\nwrote {out}.json and {out}.png")


def main(argv=None):
    return run(parse_args(argv))


def run(a, sweep=None):
    """Build, check, time, summarise and save (``a`` from parse_args). ``sweep``: the module adding
    the other state updates (lm_states.py: ``build_state_models``, ``summarize_states``, ``config``,
    ``plot_states``)."""
    mach = set_up(a)
    t_start = time.perf_counter()
    dictionary = make_dictionary(a.vocab)
    models, soft, t2r, counts = build_models(a, dictionary)
    states, skipped = sweep.build_state_models(a, dictionary, t2r) if sweep else ({}, {})
    models.update(states)
    checks, rows, flat = measure(models, soft, t2r, dictionary, a, states)
    wall = time.perf_counter() - t_start
    summary = summarize(rows, flat)
    if sweep:
        sweep.summarize_states(rows, summary)
    for line in summary["lines"]:
        print(line)
    print(f"measured in {wall:.0f} s", flush=True)
    result = {
        "benchmark": "lm_generation: per-token incremental decoding, softmax transformer_lm vs T2R twin and floors",
        "machine": mach,
        "config": {**run_config(a, dictionary, models, counts, wall), **(sweep.config(a, skipped) if sweep else {})},
        "prefill_check_max_abs_diff": checks,
        "summary": summary,
        "results": rows,
        "flatness": flat,
    }
    if a.out:
        save(result, a, sweep.plot_states if sweep else plot)
    return result


def flatness(t2r, kept, a):
    """T2R's time per token at the shortest and the longest context, timed side by side: the two
    states the table's rows prefilled (``kept``: context -> (tokens, state)), interleaved per repeat
    (the order alternating), so that the machine's drift between the rows (minutes apart) stays out
    of the ratio."""
    short, long = sorted(kept)
    times = {short: [], long: []}
    for r in range(a.repeats):
        for ctx in ((short, long) if r % 2 == 0 else (long, short)):
            tokens, state = kept[ctx]
            times[ctx] += time_steps(t2r, tokens, state, ctx, a.steps, a.warmup)
    ms = [1000 * statistics.median(times[c]) for c in (short, long)]
    return {"contexts": [short, long], "ms": ms, "ratio": ms[1] / ms[0],
            "step_ms": {str(c): [1000 * t for t in times[c]] for c in (short, long)}}


def summarize(rows, flat=None):
    """The figures the targets are stated in (see docs/results/speed.md)."""
    s = {"lines": []}
    have = lambda name: all(name in r["ms_per_token"] for r in rows)  # noqa: E731
    first, last = rows[0], rows[-1]
    if have("t2r"):
        across = last["ms_per_token"]["t2r"] / first["ms_per_token"]["t2r"]
        s["t2r_flatness_across_rows"] = {"from": first["context"], "to": last["context"], "ratio": across}
        s["lines"].append(f"T2R ms/token at {last['context']} / at {first['context']} (table rows): {across:.3f}")
    if flat:
        s["t2r_flatness"] = {"from": flat["contexts"][0], "to": flat["contexts"][1], "ratio": flat["ratio"]}
        s["lines"].append(f"T2R ms/token at {flat['contexts'][1]} / at {flat['contexts'][0]}, timed side by side: "
                          f"{flat['ratio']:.3f}")
    if have("softmax") and have("t2r"):
        s["speedup"] = {str(r["context"]): r["speedup"] for r in rows}
        s["lines"].append("softmax / T2R per token: " + ", ".join(f"{r['context']}: {r['speedup']:.1f}x" for r in rows))
        s["state_ratio_last"] = last["softmax_state_bytes"] / last["t2r_state_bytes"]
        s["t2r_state_constant"] = len({r["t2r_state_bytes"] for r in rows}) == 1
        s["lines"].append(f"state at {last['context']}: softmax {last['softmax_state_MB']:.1f} MB, T2R "
                          f"{last['t2r_state_MB']:.2f} MB (1/{s['state_ratio_last']:.0f}); T2R constant: {s['t2r_state_constant']}")
    for f in ("floor_none", "floor_proj"):
        if have("t2r") and have(f):
            worst = max(r[f"t2r_over_{f}"] for r in rows)
            s[f"t2r_over_{f}_max"] = worst
            s["lines"].append(f"T2R / {f}: " + ", ".join(f"{r[f't2r_over_{f}']:.3f}" for r in rows) + f" (max {worst:.3f})")
    if have("t2r") and have("t2r_unmerged"):
        s["merged_speedup"] = statistics.median(r["merged_speedup"] for r in rows)
        s["lines"].append(f"merged vs unmerged projections: {s['merged_speedup']:.3f}x per token (median over contexts)")
    return s


# ----------------------------------------------------------- the speed table's rows and section
# (run_all.py writes docs/results/speed.md from these and this script's JSON)
def targets(lm):
    by = {r["context"]: r for r in lm["results"]}
    s = lm.get("summary", {})
    return lm_flatness_rows(lm, by, s) + lm_speedup_rows(by) + lm_state_rows(by, s) + lm_floor_rows(by, s)


def lm_flatness_rows(lm, by, s):
    """T2R's time per token, longest context over shortest: side by side, and from the table's rows."""
    rows = []
    if "t2r_flatness" in s:
        f = s["t2r_flatness"]
        rows.append(checked("LM generation", f"T2R ms/token at {f['to']} / at {f['from']} (batch {lm['config']['batch']}; "
                            "the two contexts timed side by side)", f"{f['ratio']:.3f}", "<= 1.15", f["ratio"] <= 1.15))
    if "t2r_flatness_across_rows" in s:
        f = s["t2r_flatness_across_rows"]
        a, b = by[f["from"]]["ms_per_token"], by[f["to"]]["ms_per_token"]
        drift = f" (the attention-free floor moved {b['floor_none'] / a['floor_none']:.3f}x)" if "floor_none" in a else ""
        rows.append(reported("LM generation", f"same, from the table's rows (timed minutes apart){drift}",
                             f"{f['ratio']:.3f}"))
    return rows


def lm_speedup_rows(by):
    return [checked("LM generation", f"softmax / T2R time per token at {ctx}", f"{by[ctx]['speedup']:.1f}x",
                    f">= {need}x", by[ctx]["speedup"] >= need)
            for ctx, need in ((4096, 20), (8192, 35)) if ctx in by and "speedup" in by[ctx]]


def lm_state_rows(by, s):
    """T2R's state: the same size at every context, and a small fraction of softmax's KV cache."""
    if "t2r_state_constant" not in s:
        return []
    longest = max(by)
    last = by[longest]
    ratio = last["t2r_state_bytes"] / last["softmax_state_bytes"]
    return [checked("LM generation", "T2R incremental state bytes at every context",
                    f"{last['t2r_state_bytes']:,} B at each" if s["t2r_state_constant"] else "varies",
                    "constant", s["t2r_state_constant"]),
            checked("LM generation", f"T2R state / softmax KV cache at {longest}",
                    f"1/{1 / ratio:.0f} ({last['t2r_state_MB']:.2f} MB vs {last['softmax_state_MB']:.0f} MB)",
                    "<= 1/100", ratio <= 0.01)]


def lm_floor_rows(by, s):
    """T2R against the same model with attention removed or reduced to its projections; merged projections."""
    rows = []
    if "t2r_over_floor_none_max" in s:
        v = s["t2r_over_floor_none_max"]
        rows.append(checked("LM generation", "T2R / same model with attention removed, per token (max over contexts)",
                            f"{v:.3f}", "<= 1.10", v <= 1.10))
    if all("floor_proj" in r["ms_per_token"] and "floor_none" in r["ms_per_token"] for r in by.values()):
        # what limits the row above: the matmuls a T2R step cannot avoid, without any state
        v = min(r["ms_per_token"]["floor_proj"] / r["ms_per_token"]["floor_none"] for r in by.values())
        rows.append(reported("LM generation", "its limit: attention reduced to its two projections / attention removed "
                             "(min over contexts)", f"{v:.3f}"))
    if "t2r_over_floor_proj_max" in s:
        rows.append(reported("LM generation", "T2R / attention reduced to its two projections (max over contexts)",
                             f"{s['t2r_over_floor_proj_max']:.3f}"))
    if "merged_speedup" in s:
        rows.append(reported("LM generation", "merged vs unmerged projections, per token (median over contexts)",
                             f"{s['merged_speedup']:.3f}x"))
    return rows


def section(lm):
    c = lm["config"]
    lines = ["", "## LM generation (ms per token)", "",
             f"{c['layers']} layers, {c['dim']} dims, {c['heads']} heads, FFN {c['ffn']}, vocab {c['vocab']}, "
             f"T2R k={c['feature_dim']}, batch {c['batch']}, fp32, {c.get('clock', 'wall')} clock. Softmax's KV "
             f"cache is synthesised above {c.get('softmax_prefill_max')} tokens (see the script).", ""]
    variants = c.get("variants", ["softmax", "t2r"])
    head = ["context"] + variants + ["softmax / T2R", "softmax state MB", "T2R state MB"]
    rows = [[r["context"]] + [f"{r['ms_per_token'][v]:.2f}" for v in variants]
            + [f"{r.get('speedup', float('nan')):.1f}x", f"{r['softmax_state_MB']:.1f}", f"{r['t2r_state_MB']:.2f}"]
            for r in lm["results"]]
    return lines + table(rows, head) + ["", "![lm_generation](../../benchmarks/results/lm_generation.png)"]


if __name__ == "__main__":
    main()
