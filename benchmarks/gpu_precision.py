#!/usr/bin/env python
"""GPU precision checks: T2R attention and fairseq training in fp32, fp16 and bf16 on CUDA.

1. ops: the parallel forms (quadratic, chunked) and the recurrent form, run on the GPU in each
   dtype, against the token-by-token recurrence computed in float64 on the CPU;
2. model: a small T2R LM's parallel log-probs against its step-by-step incremental decoding,
   in each dtype on the GPU (what fairseq-generate relies on);
3. training: stock fairseq-train of a small T2R LM on real text in fp32, --fp16 and --amp,
   same seed and data: final validation perplexity and wall time of each.

    python -m benchmarks.gpu_precision --out DIR [--updates N]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

from benchmarks import gpu_common
from benchmarks.gpu_common import rel_err
from fairseq_t2r import ops
from fairseq_t2r.machine import machine

DEVICE = "cuda"
DTYPES = {name: gpu_common.DTYPES[name] for name in ("fp32", "fp16", "bf16")}  # this check's order


def ops_check(T=2048, B=2, H=8, F=32, D=64):
    g = torch.Generator().manual_seed(0)
    phi_q = torch.relu(torch.randn(B, H, T, F, generator=g, dtype=torch.float64))
    phi_k = torch.relu(torch.randn(B, H, T, F, generator=g, dtype=torch.float64))
    v = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    ref = ops.causal_reference(phi_q, phi_k, v)
    out = {}
    for name, dt in DTYPES.items():
        q, k, vv = (x.to(DEVICE, dt) for x in (phi_q, phi_k, v))
        out[name] = {
            "quadratic": rel_err(ops.causal_quadratic(q, k, vv).cpu(), ref),
            "chunked": rel_err(ops.causal_chunked(q, k, vv).cpu(), ref),
            "recurrent": rel_err(ops.causal_reference(q, k, vv).cpu(), ref),
            "input_rounding": rel_err(ops.causal_reference(*(x.to(dt).double() for x in (phi_q, phi_k, v))), ref),
        }
        print(f"ops {name}: max error / max |ref| " + ", ".join(f"{k} {e:.2e}" for k, e in out[name].items()), flush=True)
    return out


def model_check(T=512):
    import argparse

    from benchmarks.common import FakeTask, make_dictionary
    from benchmarks.lm_models import build

    torch.manual_seed(0)
    size = argparse.Namespace(layers=2, dim=128, heads=4, ffn=256, feature_map="t2r", feature_dim=32)
    base = build("t2r_transformer_lm", FakeTask(make_dictionary(200)), size, T + 8)
    tokens = torch.randint(4, 200, (4, T))
    out = {}
    for name, dt in DTYPES.items():
        model = base.to(DEVICE, dt)
        x = tokens.to(DEVICE)
        with torch.no_grad():
            full = model.get_normalized_probs(model(x), log_probs=True).float()
            state, steps = {}, []
            for t in range(T):
                o = model.decoder(x[:, : t + 1], incremental_state=state)
                steps.append(model.get_normalized_probs(o, log_probs=True).float())
            inc = torch.cat(steps, 1)
        out[name] = {"max_abs_logprob_diff": float((full - inc).abs().max()),
                     "argmax_agreement": float((full.argmax(-1) == inc.argmax(-1)).float().mean())}
        print(f"model {name}: parallel vs incremental log-probs max |diff| {out[name]['max_abs_logprob_diff']:.2e}, "
              f"argmax agreement {out[name]['argmax_agreement']:.4f}", flush=True)
    return out


def training_check(workdir, updates):
    data = os.path.join(REPO, "tests", "data", "lm", "english.txt")
    lines = open(data, encoding="utf-8").read().splitlines()
    os.makedirs(workdir, exist_ok=True)
    for name, part in (("train", lines[:-300]), ("valid", lines[-300:])):
        with open(os.path.join(workdir, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
    bin_dir = os.path.join(workdir, "bin")
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--task", "language_modeling",
                    "--trainpref", f"{workdir}/train.txt", "--validpref", f"{workdir}/valid.txt",
                    "--destdir", bin_dir, "--workers", "4"], check=True, capture_output=True)
    out = {}
    # no bf16 run: fairseq's --bf16 implies --tpu (fairseq.utils.get_tpu_device), so stock
    # fairseq-train cannot train in bf16 on a GPU; --amp is torch autocast in fp16
    for name, flags in (("fp32", []), ("fp16", ["--fp16"]), ("amp", ["--amp"])):
        cmd = [sys.executable, "-m", "fairseq_cli.train", bin_dir, "--user-dir", os.path.join(REPO, "fairseq_t2r"),
               "--task", "language_modeling", "--arch", "t2r_transformer_lm", "--decoder-layers", "4",
               "--decoder-embed-dim", "256", "--decoder-input-dim", "256", "--decoder-output-dim", "256",
               "--decoder-ffn-embed-dim", "1024", "--required-batch-size-multiple", "1", "--decoder-attention-heads", "4",
               "--share-decoder-input-output-embed", "--tokens-per-sample", "512", "--sample-break-mode", "none",
               "--max-tokens", "8192", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
               "--warmup-updates", "50", "--max-update", str(updates), "--log-format", "json", "--log-interval", "50",
               "--no-save", "--seed", "1", "--num-workers", "0", *flags]
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        valid = [json.loads(m.group(1)) for m in re.finditer(r"\| valid \| (\{.*\})", res.stdout + res.stderr)]
        out[name] = {"returncode": res.returncode, "seconds": round(wall, 1),
                     "valid_ppl": float(valid[-1]["valid_ppl"]) if valid else None}
        if res.returncode:
            out[name]["error"] = (res.stdout + res.stderr)[-1500:]
        print(f"train {name}: rc {res.returncode}, valid ppl {out[name]['valid_ppl']}, {wall:.0f} s", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--cpu", action="store_true", help="smoke-run the first two checks on the CPU")
    a = p.parse_args()
    global DEVICE
    if a.cpu:
        DEVICE = "cpu"
        print(ops_check(T=256), model_check(T=32))
        return
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    os.makedirs(a.out, exist_ok=True)
    results = {"machine": {**machine(), "gpu": torch.cuda.get_device_name()}}
    results["ops"] = ops_check()
    results["model"] = model_check()
    results["training"] = training_check(os.path.join("/tmp", "t2r_gpu_precision"), a.updates)
    with open(os.path.join(a.out, "gpu_precision.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
