"""What the demo reads off its runs: fairseq's logs, translations, and decoding speed and memory.

Scores come from the stock tools' own output (``fairseq-eval-lm``'s perplexity, the
hypotheses ``fairseq-generate`` prints, scored with sacreBLEU against the raw references);
validation curves from ``fairseq-train``'s JSON log lines.
"""
import json
import re
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..checkpoint import atomic_write

VALID_LINE = re.compile(r"\| valid \| (\{.*\})\s*$")
PPL_LINE = re.compile(r"Perplexity: ([\d.]+)")
HYPO_LINE = re.compile(r"^D-(\d+)\t[^\t]*\t(.*)$")


def valid_curve(log: Path) -> List[dict]:
    """[{"updates", "loss", "ppl"}] from every validation a fairseq-train log reports."""
    points = []
    for line in _lines(log):
        m = VALID_LINE.search(line)
        if m:
            rec = json.loads(m.group(1))
            point = {"updates": int(float(rec["valid_num_updates"])), "loss": float(rec["valid_loss"])}
            for key in ("ppl", "bleu"):
                if f"valid_{key}" in rec:
                    point[key] = float(rec[f"valid_{key}"])
            points.append(point)
    # a resumed run validates some updates twice: keep the last report of each
    return sorted({p["updates"]: p for p in points}.values(), key=lambda p: p["updates"])


def perplexity(log: Path) -> Optional[float]:
    found = [float(m.group(1)) for m in map(PPL_LINE.search, _lines(log)) if m]
    return found[-1] if found else None


def translation_scores(log: Path, references: Path) -> Dict[str, float]:
    """sacreBLEU and chrF of fairseq-generate's detokenised hypotheses (D- lines) on the test set."""
    import sacrebleu

    hyps = hypotheses(log)
    refs = references.read_text(encoding="utf-8").splitlines()
    if len(hyps) != len(refs):
        raise RuntimeError(f"{log}: {len(hyps)} translations for {len(refs)} references")
    sys_lines = [hyps[i] for i in range(len(refs))]
    return {"bleu": round(sacrebleu.corpus_bleu(sys_lines, [refs]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(sys_lines, [refs]).score, 2),
            "sentences": len(refs)}


def hypotheses(log: Path) -> Dict[int, str]:
    """{sentence id: detokenised hypothesis} from the D- lines of a fairseq-generate log
    (none if the file is missing)."""
    found = {}
    for line in _lines(log):
        m = HYPO_LINE.match(line)
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def _lines(path: Path):
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------- decoding speed and memory
def state_bytes(state) -> int:
    """Bytes held by an incremental state (every tensor counted once)."""
    import torch

    seen, total = set(), 0
    stack = [state]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, torch.Tensor) and x.data_ptr() not in seen:
            seen.add(x.data_ptr())
            total += x.numel() * x.element_size()
    return total


def decode(model, context: int, rows: int, window: int, source_len: int = 0, seed: int = 1) -> dict:
    """Generates ``context`` tokens one step at a time as fairseq's SequenceGenerator does
    (decoder step with the incremental state, log-softmax, reorder of the state), and returns the
    median time per step over the last ``window`` steps and the state's bytes at the end.

    Translation models decode ``rows`` beams of one ``source_len``-token sentence."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d = model.decoder.dictionary
    low = d.nspecial
    tokens = torch.randint(low, len(d), (rows, context + 1), generator=g)
    tokens[:, 0] = d.eos()
    encoder_out = None
    if source_len:
        src = torch.randint(low, len(d), (1, source_len), generator=g)
        src[:, -1] = d.eos()
        encoder_out = model.encoder(src, src_lengths=torch.tensor([source_len]))
        encoder_out = model.encoder.reorder_encoder_out(encoder_out, torch.zeros(rows, dtype=torch.long))
        if hasattr(model, "set_beam_size"):
            model.set_beam_size(rows)
    embed_positions = getattr(model.decoder, "embed_positions", None)
    if embed_positions is not None:
        # beyond the length it was built for, fairseq's sinusoidal table is rebuilt at every
        # step (O(context) work for both models alike): grow it once, before timing
        embed_positions(tokens)
    state: Dict = {}
    order = torch.arange(rows)
    times = []
    with torch.no_grad():
        for t in range(context):
            t0 = time.perf_counter()
            model.decoder.reorder_incremental_state_scripting(state, order) if t else None
            out = model.decoder(tokens[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
            model.get_normalized_probs(out, log_probs=True)
            times.append(time.perf_counter() - t0)
    return {"context": context, "ms_per_token": round(1000 * statistics.median(times[-window:]), 3),
            "state_bytes": state_bytes(state)}


def load_model(path: str, data: str):
    from fairseq import checkpoint_utils

    models, _ = checkpoint_utils.load_model_ensemble([path], arg_overrides={"data": data})
    return models[0].eval()


def speed(plan, run: str, out_json: Path, rows: int = 4, window: int = 16):
    """Time per token and state memory of the teacher and the finetuned converted model ``run``
    (under "t2r"), at each of the preset's context lengths (translation: source and target both
    that long, beam 4)."""
    results = {"converted_run": run}
    for name, path in (("teacher", plan.checkpoint("teacher")), ("t2r", plan.checkpoint(run))):
        model = load_model(path, str(plan.bin))
        runs = []
        for c in plan.preset.contexts:
            r = decode(model, c, rows, window, source_len=c if plan.kind == "mt" else 0)
            print(f"{name}: context {c}: {r['ms_per_token']} ms/token, state {r['state_bytes'] / 2**20:.2f} MiB",
                  flush=True)
            runs.append(r)
        results[name] = runs
    results["rows"] = rows
    atomic_write(out_json, json.dumps(results, indent=1) + "\n")


def updates_to_reach(curve: List[dict], key: str, target: float, higher_is_better: bool) -> Optional[int]:
    """The first validation (in updates) at which ``key`` reaches ``target``; None if none did."""
    for p in curve:
        if key in p and (p[key] >= target if higher_is_better else p[key] <= target):
            return p["updates"]
    return None
