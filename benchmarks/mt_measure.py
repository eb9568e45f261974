"""mt_decoding.py's models and timings: the softmax transformer and its T2R twins (same weights),
generation through fairseq's SequenceGenerator with the output length forced, decoder steps timed
directly, and the source = target length points."""
import argparse
import copy
import statistics
import time

import torch
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.sequence_generator import SequenceGenerator

import fairseq_t2r.models  # noqa: F401  (registers t2r_transformer)
from benchmarks.common import FakeTask, state_bytes

# the models timed: name -> (arch, --t2r-cross); "t2r" is linear cross-attention, as in earlier results
TWINS = {"softmax": ("transformer", None), "t2r": ("t2r_transformer", "linear"),
         "t2r_softmax_cross": ("t2r_transformer", "softmax")}


LABELS = {"softmax": "softmax", "t2r": "T2R linear cross", "t2r_softmax_cross": "T2R softmax cross"}


def build(arch, task, a, max_positions, cross=None):
    args = argparse.Namespace(
        arch=arch,
        encoder_layers=a.enc_layers, decoder_layers=a.dec_layers,
        encoder_embed_dim=a.dim, decoder_embed_dim=a.dim,
        encoder_ffn_embed_dim=a.ffn, decoder_ffn_embed_dim=a.ffn,
        encoder_attention_heads=a.heads, decoder_attention_heads=a.heads,
        share_all_embeddings=True,
        max_source_positions=max_positions, max_target_positions=max_positions,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        t2r_feature_map=a.feature_map, t2r_feature_dim=a.feature_dim, t2r_cross=cross,
    )
    ARCH_CONFIG_REGISTRY[arch](args)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, task).eval().float()


def source_batch(dictionary, batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(dictionary.nspecial, len(dictionary), (batch, length), generator=g)
    src[:, -1] = dictionary.eos()
    return {"net_input": {"src_tokens": src, "src_lengths": torch.full((batch,), length)}}


def generate(model, dictionary, sample, beam, tgt):
    gen = SequenceGenerator([model], dictionary, beam_size=beam, min_len=tgt, max_len_a=0,
                            max_len_b=tgt, max_len=tgt + 2)
    t0 = CLOCK()
    hypos = gen.generate([model], sample)
    dt = CLOCK() - t0
    got = {len(h["tokens"]) for nbest in hypos for h in nbest}
    assert got == {tgt + 1}, f"forced length {tgt} + eos, got lengths {sorted(got)}"
    return dt


CLOCK = time.perf_counter


def decoder_steps(model, dictionary, src_len, beam, steps, warmup, seed):
    """(ms per decoder step, bytes of the incremental state after the last step), timed directly (no SequenceGenerator): one sentence of src_len tokens
    encoded once and expanded to ``beam`` rows, then ``steps`` incremental decoder steps, each
    followed by a reorder of the incremental state (a shuffle within the beam, as beam search
    does). fairseq's generator also re-indexes encoder_out at every step (an O(source) copy,
    outside the attention; the T2R model skips it once its source summaries exist), which this
    leaves out."""
    sample = source_batch(dictionary, 1, src_len, seed)
    enc = model.encoder(**sample["net_input"])
    enc = model.encoder.reorder_encoder_out(enc, torch.zeros(beam, dtype=torch.long))
    if hasattr(model, "set_beam_size"):  # as SequenceGenerator does (the stock transformer has none)
        model.set_beam_size(beam)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(dictionary.nspecial, len(dictionary), (beam, warmup + steps + 1), generator=g)
    tokens[:, 0] = dictionary.eos()
    shuffle = torch.roll(torch.arange(beam), 1)
    state, times = {}, []
    for t in range(warmup + steps):
        t0 = CLOCK()
        out = model.decoder(tokens[:, : t + 1], encoder_out=enc, incremental_state=state)
        model.get_normalized_probs((out[0][:, -1:, :], out[1]), log_probs=True, sample=None)
        model.decoder.reorder_incremental_state_scripting(state, shuffle)
        dt = CLOCK() - t0
        if t >= warmup:
            times.append(dt)
    return 1000 * sum(times) / len(times), state_bytes(state)


def encode(model, sample):
    t0 = CLOCK()
    model.encoder(**sample["net_input"])
    return CLOCK() - t0


def parse_lengths(s):
    """'32,128' -> [32, 128] (sorted, each once)."""
    return sorted({int(x) for x in s.split(",") if x.strip()})


def sweep_points(a):
    """[(sweep, src, tgt, batch)]: the source sweep, the target sweep, then the batched points."""
    points = [("source", s, a.fixed_tgt, a.batch) for s in parse_lengths(a.src_lens)]
    points += [("target", a.fixed_src, t, a.batch) for t in parse_lengths(a.tgt_lens)
               if ("source", a.fixed_src, t, a.batch) not in points]
    points += [("batch", a.fixed_src, a.fixed_tgt, b) for b in parse_lengths(a.batched) if b != a.batch]
    return points + [("context", n, n, a.batch) for n in parse_lengths(a.contexts)]


def build_twins(a, dictionary, points):
    """The softmax model and its T2R twins with the same weights: ({name: model}, parameter counts)."""
    task = FakeTask(dictionary)
    max_pos = max(max(s, t) for _, s, t, _ in points) + 8
    names = ["softmax", "t2r"] + (["t2r_softmax_cross"] if "softmax" in a.t2r_cross.split(",") else [])
    models = {n: build(TWINS[n][0], task, a, max_pos, TWINS[n][1]) for n in names}
    for n in names[1:]:
        models[n].load_state_dict(copy.deepcopy(models["softmax"].state_dict()))  # the hook adds the feature maps
    counts = {n: sum(x.numel() for x in m.parameters()) for n, m in models.items()}
    print(f"model: {a.enc_layers}+{a.dec_layers} layers, {a.dim} dims, {a.heads} heads, FFN {a.ffn}, "
          f"vocab {len(dictionary)} (shared embeddings); params "
          + ", ".join(f"{LABELS[n]} {c / 1e6:.2f}M" for n, c in counts.items())
          + f" ({a.feature_map} k={a.feature_dim}); batch {a.batch} sentence(s); also batches {a.batched} "
          f"at src {a.fixed_src}, tgt {a.fixed_tgt}", flush=True)
    return models, counts["softmax"], counts["t2r"]


def generate_rows(models, dictionary, a, points):
    """One row per beam and point: both models through SequenceGenerator, interleaved, medians."""
    warm = source_batch(dictionary, a.batch, a.fixed_src, a.seed)
    for beam in a.beams:  # untimed: first calls allocate and warm up kernels
        for m in models.values():
            generate(m, dictionary, warm, beam, 32)
    print(f"\n{'sweep':>6} {'beam':>4} {'batch':>5} {'src':>5} {'tgt':>5} | "
          + " ".join(f"{n + ' ms/tok':>14}" for n in models) + f" | {'softmax/t2r':>11} | {'encoder s':>9}", flush=True)
    rows = []
    for beam in a.beams:
        for point in points:
            if point[0] != "context":  # (timed directly: context_rows)
                rows.append(generate_row(models, dictionary, a, beam, *point))
    return rows


def generate_row(models, dictionary, a, beam, sweep, src_len, tgt_len, batch):
    sample = source_batch(dictionary, batch, src_len, a.seed + src_len)
    times = {n: [] for n in models}
    for r in range(a.repeats if sweep != "batch" else a.batched_repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            times[name].append(generate(models[name], dictionary, sample, beam, tgt_len))
    enc = statistics.median(encode(models["softmax"], sample) for _ in range(max(1, a.repeats)))
    med = {n: statistics.median(t) for n, t in times.items()}
    row = {"sweep": sweep, "beam": beam, "src": src_len, "tgt": tgt_len, "batch": batch, "encoder_s": enc}
    for n in models:  # softmax_s, t2r_s, ..._ms_per_token, ..._decoder_ms_per_step, ..._runs_s
        row.update({f"{n}_s": med[n], f"{n}_ms_per_token": 1000 * med[n] / tgt_len,
                    f"{n}_decoder_ms_per_step": 1000 * (med[n] - enc) / (tgt_len + 1), f"{n}_runs_s": times[n]})
        if n != "softmax":
            row["speedup" + ("" if n == "t2r" else "_" + n)] = med["softmax"] / med[n]
    print(f"{sweep:>6} {beam:>4} {batch:>5} {src_len:>5} {tgt_len:>5} | "
          + " ".join(f"{row[n + '_ms_per_token']:>14.2f}" for n in models)
          + f" | {row['speedup']:>10.2f}x | {enc:>9.3f}", flush=True)
    return row


def interleaved_steps(models, dictionary, a, lengths, steps, repeats):
    """{(model, src_len): [(ms per step, state bytes)]}: every length and model timed per repeat,
    orders alternating (the machine drifts over the minutes a sweep takes)."""
    got = {(n, L): [] for n in models for L in lengths}
    for r in range(repeats):
        for src_len in (lengths if r % 2 == 0 else lengths[::-1]):
            for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
                got[name, src_len].append(decoder_steps(models[name], dictionary, src_len, a.beams[0],
                                                        steps(src_len), a.warmup_steps, a.seed + src_len))
    return got


def direct_step_rows(models, dictionary, a):
    """One row per source length: decoder steps timed directly, at the first beam size."""
    print(f"\ndecoder steps timed directly ({a.step_count} steps after {a.warmup_steps}, beam {a.beams[0]}, "
          f"state reordered each step):", flush=True)
    lens = parse_lengths(a.src_lens)
    got = interleaved_steps(models, dictionary, a, lens, lambda L: a.step_count, a.step_repeats)
    step_rows = []
    for src_len in lens:
        med = {n: statistics.median(ms for ms, _ in got[n, src_len]) for n in models}
        row = {"src": src_len, "beam": a.beams[0], "steps": a.step_count}
        for n in models:
            row[f"{n}_ms_per_step"] = med[n]
            if n != "softmax":
                row["speedup" + ("" if n == "t2r" else "_" + n)] = med["softmax"] / med[n]
        step_rows.append(row)
        print(f"  src {src_len:>5}: " + ", ".join(f"{LABELS[n]} {med[n]:.2f}" for n in models) + " ms/step", flush=True)
    return step_rows


def context_rows(models, dictionary, a):
    """--contexts: per L, a whole L-token translation of an L-token source, decoder steps timed
    directly (mean ms per token over the L steps) and the state's bytes after them."""
    lens = parse_lengths(a.contexts)
    if not lens:
        return []
    print(f"\nsource = target length, L decoder steps timed directly (beam {a.beams[0]}, median of "
          f"{a.step_repeats}):", flush=True)
    got = interleaved_steps(models, dictionary, a, lens, lambda L: L, a.step_repeats)
    rows = []
    for L in lens:
        row = {"context": L, "beam": a.beams[0]}
        for n in models:
            row[f"{n}_ms_per_token"] = statistics.median(ms for ms, _ in got[n, L])
            row[f"{n}_state_bytes"] = got[n, L][0][1]
        rows.append(row)
        print(f"  L {L:>5}: " + ", ".join(f"{LABELS[n]} {row[n + '_ms_per_token']:.2f} ms/token, "
                                         f"{row[n + '_state_bytes'] / 2**20:.2f} MiB" for n in models), flush=True)
    return rows
