"""How faithful a converted model is to its softmax teacher, beyond its own score.

- language models: on the same test blocks, the fraction of target positions where both models'
  top-1 next word agree, and the mean KL(teacher || model) of their next-word distributions;
- translation models: BLEU of the model's fairseq-generate hypotheses against the teacher's.

Command line (one line printed, JSON written with ``atomic_write`` when ``--out`` is given):
    python -m fairseq_t2r.demo.faithfulness lm TEACHER MODEL DATA_BIN [--subset test] [--out JSON]
    python -m fairseq_t2r.demo.faithfulness mt MODEL_LOG TEACHER_LOG [--out JSON]
"""
import argparse
import json
from pathlib import Path

from ..checkpoint import atomic_write
from ..errors import T2RUserError


def _sums(teacher_lprobs, model_lprobs, mask=None):
    """(agreeing positions, summed KL in nats, counted positions) as Python numbers."""
    import torch

    if teacher_lprobs.shape != model_lprobs.shape:
        raise ValueError(f"teacher log-probs {tuple(teacher_lprobs.shape)} and model log-probs "
                         f"{tuple(model_lprobs.shape)} differ in shape: give both (..., V)")
    if mask is None:
        mask = torch.ones(teacher_lprobs.shape[:-1], dtype=torch.bool, device=teacher_lprobs.device)
    if mask.shape != teacher_lprobs.shape[:-1]:
        raise ValueError(f"mask {tuple(mask.shape)} must have the log-probs' shape without the last "
                         f"dimension, {tuple(teacher_lprobs.shape[:-1])}")
    agree, kl = per_position(teacher_lprobs[mask], model_lprobs[mask])  # (N,)
    return agree.sum().item(), kl.sum().item(), int(mask.sum().item())


def per_position(teacher_lprobs, model_lprobs):
    """(top-1 agreement (bool), KL(teacher || model) in nats (float64)) at each position of (..., V)
    log-probs."""
    import torch

    lt, lm = teacher_lprobs.double(), model_lprobs.double()
    p = lt.exp()
    # 0 * log 0 = 0: words the teacher gives no mass add nothing, whatever the model gives them
    # (where() also drops the NaN of -inf - -inf there)
    return lt.argmax(-1) == lm.argmax(-1), torch.where(p > 0, p * (lt - lm), torch.zeros_like(p)).sum(-1)


def agreement_and_kl(teacher_lprobs, model_lprobs, mask=None) -> dict:
    """Top-1 agreement and mean KL(teacher || model) over the counted positions.

    teacher_lprobs, model_lprobs: (..., V) normalised log-probabilities; mask: (...) bool, True at
    the positions to count (None: all). KL is computed in float64, in nats. On ties the top-1 word
    is whichever ``torch.argmax`` returns (in practice the first maximal index).
    Returns {"top1_agreement", "kl", "tokens"}."""
    agree, kl, n = _sums(teacher_lprobs, model_lprobs, mask)
    if n == 0:
        raise ValueError("the mask counts no position: agreement and KL are undefined")
    return {"top1_agreement": agree / n, "kl": kl / n, "tokens": n}


def _load(path, data_bin, tokens_per_sample):
    from fairseq import checkpoint_utils

    from .. import criterions, models  # noqa: F401  registers the T2R models the checkpoint may name

    ms, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [path], arg_overrides={"data": data_bin, "tokens_per_sample": tokens_per_sample})
    return ms[0].eval(), task


def lm_faithfulness(teacher_path, model_path, data_bin, subset="test", tokens_per_sample=128,
                    max_tokens=8192) -> dict:
    """``agreement_and_kl`` of a language model against its teacher over every non-pad target of
    ``subset`` (blocks of ``tokens_per_sample`` as the teacher's task cuts them); both models see
    the identical batches and the sums run over all of them."""
    import torch
    from fairseq import utils

    teacher, task = _load(teacher_path, data_bin, tokens_per_sample)
    model, model_task = _load(model_path, data_bin, tokens_per_sample)
    if model_task.target_dictionary != task.target_dictionary:
        raise T2RUserError(f"{model_path} and {teacher_path} have different dictionaries: "
                           "compare a model only with the teacher it was converted from")
    task.load_dataset(subset)
    itr = task.get_batch_iterator(
        dataset=task.dataset(subset), max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), teacher.max_positions(),
                                                  model.max_positions()),
    ).next_epoch_itr(shuffle=False)
    pad = task.target_dictionary.pad()
    agree = kl = n = 0
    with torch.no_grad():
        for sample in itr:
            lt, lm = (m.get_normalized_probs(m(**sample["net_input"]), log_probs=True) for m in (teacher, model))
            a, k, c = _sums(lt, lm, sample["target"] != pad)
            agree, kl, n = agree + a, kl + k, n + c
    if n == 0:
        raise T2RUserError(f"{data_bin}: subset {subset} has no target tokens")
    return {"top1_agreement": agree / n, "kl": kl / n, "tokens": n}


def mt_faithfulness(model_generate_log, teacher_generate_log) -> dict:
    """BLEU of the model's detokenised fairseq-generate hypotheses with the teacher's as the
    references. Returns {"bleu_vs_teacher", "sentences"}."""
    import sacrebleu

    from .measure import hypotheses

    hyps, refs = hypotheses(model_generate_log), hypotheses(teacher_generate_log)
    if not hyps or hyps.keys() != refs.keys():
        raise RuntimeError(f"{model_generate_log} ({len(hyps)} translations) and {teacher_generate_log} "
                           f"({len(refs)}) do not translate the same sentence ids: run fairseq-generate "
                           "on the same test set for both")
    ids = sorted(hyps)
    bleu = sacrebleu.corpus_bleu([hyps[i] for i in ids], [[refs[i] for i in ids]])
    return {"bleu_vs_teacher": round(bleu.score, 2), "sentences": len(ids)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fairseq_t2r.demo.faithfulness", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    lm = sub.add_parser("lm", help="top-1 agreement and KL of a language model against its teacher")
    for name in ("teacher", "model", "data_bin"):
        lm.add_argument(name)
    lm.add_argument("--subset", default="test")
    lm.add_argument("--tokens-per-sample", type=int, default=128)
    lm.add_argument("--max-tokens", type=int, default=8192)
    mt = sub.add_parser("mt", help="BLEU of a translation model's hypotheses against its teacher's")
    mt.add_argument("model_log")
    mt.add_argument("teacher_log")
    for s in (lm, mt):
        s.add_argument("--out", help="write the result here as JSON")
    a = p.parse_args(argv)
    if a.kind == "lm":
        r = lm_faithfulness(a.teacher, a.model, a.data_bin, a.subset, a.tokens_per_sample, a.max_tokens)
        print(f"faithfulness: top-1 agreement {r['top1_agreement']:.4f}, KL(teacher || model) "
              f"{r['kl']:.4f} nats over {r['tokens']} tokens", flush=True)
    else:
        r = mt_faithfulness(a.model_log, a.teacher_log)
        print(f"faithfulness: BLEU {r['bleu_vs_teacher']} against the teacher's translations "
              f"of {r['sentences']} sentences", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(a.out, json.dumps(r, indent=1) + "\n")
    return r


if __name__ == "__main__":
    main()
