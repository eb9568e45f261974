"""``compare(...)``: every probe of one task on the teacher and the converted models, in order,
with one progress line per step; returns the results ``report.write`` turns into the report."""
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import T2RUserError
from . import copying, generation, length, passkey, recall, speed, translation
from .models import Loaded, dictionary, load, same_dictionaries, scorer, sentences, task_kind, token_stream, trained_length

# probes by task, in the order they run (each a step with its progress line)
LM_PROBES = ("recall", "copying", "passkey", "length", "generation", "speed")
MT_PROBES = ("translation", "speed")


def model_names(paths: List[str]) -> List[str]:
    """A short unique name per converted checkpoint: its folder for checkpoint_*.pt, else its stem."""
    names = []
    for p in paths:
        path = Path(p)
        base = path.parent.name if path.name.startswith("checkpoint") and path.parent.name else path.stem
        name, i = base, 2
        while name in names or name == "teacher":
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def check_inputs(teacher: str, converted: List[str], data: str) -> str:
    """The task of the checkpoints ("lm" or "mt"), after one-line checks of every input."""
    if not converted:
        raise T2RUserError("give at least one converted checkpoint after the teacher")
    if not Path(data).is_dir():
        raise T2RUserError(f"--data {data} is not a folder: give the fairseq-preprocess folder the models were trained on")
    kinds = {p: task_kind(p) for p in [teacher, *converted]}
    if len(set(kinds.values())) > 1:
        raise T2RUserError("the checkpoints mix tasks (" + ", ".join(f"{p}: {k}" for p, k in kinds.items())
                           + "): compare language models with a language-model teacher, translation with translation")
    return kinds[teacher]


def compare(teacher: str, converted: List[str], data: str, names: Optional[List[str]] = None,
            probes: Optional[List[str]] = None, subset: str = "test", quick: bool = False,
            max_sentences: Optional[int] = None, say: Callable[[str], None] = print) -> Dict:
    """Loads the models and runs the probes (``probes``: a subset of the task's, default all);
    ``quick`` runs fewer trials and sentences (the demo's and the tests' setting); ``max_sentences``:
    translation's test sentences (documents: one per 25 sentences, at least 4)."""
    kind = check_inputs(teacher, converted, data)
    names = names or model_names(converted)
    wanted = LM_PROBES if kind == "lm" else MT_PROBES
    probes = [p for p in wanted if probes is None or p in probes]
    start = time.perf_counter()
    total = len(probes) + 1

    def step(i, what, func):
        say(f"[t2r-compare] step {i} of {total}: {what} ...")
        t0 = time.perf_counter()
        result = func()
        say(f"[t2r-compare] step {i} of {total}: {what} done in {time.perf_counter() - t0:.1f} s")
        return result

    models: List[Loaded] = step(1, f"load the teacher and {len(converted)} converted model(s)", lambda: [
        load(n, p, data, kind) for n, p in zip(["teacher", *names], [teacher, *converted])])
    same_dictionaries(models)
    trained = trained_length(teacher, kind)
    results = {"task": kind, "data": str(data), "subset": subset, "trained_length": trained, "quick": quick,
               "models": {m.name: {"path": m.path, "converted": m.converted, "positions": m.positions,
                                   "limit": m.limit} for m in models},
               "seconds": {}}
    dict_ = dictionary(models[0])
    if kind == "lm":
        stream = token_stream(data, subset, dict_)
        # --quick: up to 2x the trained length and fewer trials (the demo's quick preset, the tests)
        most = 2 if quick else 8
        multiples = [k for k in (1, 2, 4, 8) if k <= most]
        runs = {
            "recall": lambda: recall.probe(scorer(models), stream, trained, len(dict_),
                                           recall.bigram_counts(token_stream(data, "train", dict_), len(dict_)),
                                           [m.name for m in models], max_blocks=40 if quick else 400),
            "copying": lambda: copying.probe(models, stream, trained, most * trained,
                                             trials=4 if quick else copying.TRIALS),
            "passkey": lambda: passkey.probe(models, stream, dict_, trained, n=4 if quick else passkey.TRIALS,
                                             multiples=multiples),
            "length": lambda: length.probe(models, stream, trained, multiples=multiples,
                                           max_tokens=4 * most * trained if quick else 16 * most * trained),
            "generation": lambda: generation.probe(models, stream, dict_, trained, n=4 if quick else generation.PROMPTS,
                                                     longest=16 if quick else 64),
            "speed": lambda: speed.probe(models, kind, trained, window=4 if quick else 16, longest=most),
        }
    else:
        model_task = models[0].model
        src_dict, tgt_dict = model_task.encoder.dictionary, model_task.decoder.dictionary
        src, tgt = _languages(data)
        n_sentences = max_sentences or (48 if quick else translation.MAX_SENTENCES)
        runs = {
            "translation": lambda: translation.probe(
                models, sentences(f"{data}/{subset}.{src}-{tgt}.{src}", src_dict),
                sentences(f"{data}/{subset}.{src}-{tgt}.{tgt}", tgt_dict), src_dict, tgt_dict, tgt,
                max_sentences=n_sentences, docs=max(4, min(translation.DOCS, n_sentences // 25))),
            "speed": lambda: speed.probe(models, kind, trained, window=4 if quick else 16),
        }
    for i, name in enumerate(probes, start=2):
        t0 = time.perf_counter()
        results[name] = step(i, name, runs[name])
        results["seconds"][name] = round(time.perf_counter() - t0, 1)
    results["seconds"]["total"] = round(time.perf_counter() - start, 1)
    return results


def _languages(data: str):
    """(source, target) languages of a translation data folder, from its ``dict.XX.txt`` files and
    its test files (``test.SRC-TGT.SRC``)."""
    for f in sorted(Path(data).glob("*.*-*.*.bin")):
        pair = f.name.split(".")[1]
        src, _, tgt = pair.partition("-")
        if f.name.split(".")[2] == src:
            return src, tgt
    raise T2RUserError(f"--data {data}: no binarized SPLIT.SRC-TGT.SRC.bin files: give the fairseq-preprocess folder")
