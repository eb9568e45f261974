"""lm_generation.py's models and one decoding step: the softmax transformer_lm and its T2R twin
(same weights), the attention floors, prefill, the synthetic softmax cache and the timed steps."""
import argparse
import copy
import dataclasses
import time

import torch
from fairseq.models import (
    ARCH_CONFIG_REGISTRY,
    ARCH_MODEL_NAME_REGISTRY,
    ARCH_MODEL_REGISTRY,
    MODEL_DATACLASS_REGISTRY,
)

import fairseq_t2r.models  # noqa: F401  (registers t2r_transformer_lm)
from benchmarks.common import FakeTask


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
