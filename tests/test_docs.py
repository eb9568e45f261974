"""Every command of README.md and examples/*/README.md, taken from the docs' own text (fenced
``bash`` and ``python`` blocks), so the docs cannot drift from what the tools do:

- RUN: README.md and the data examples' commands run as written, in order, on the quick demo's
  outputs (tests/quick_demo.py; a sandbox folder where ``runs/demo-quick`` is a copy of them and
  ``fairseq_t2r`` the plugin), through a tool server in the background, and give the right answer:
  exit 0, tokens evaluated and a perplexity, readable text (no ``@@``), the files they write.
- PARSE: commands that need GPUs, several nodes, fairseq's released checkpoints or their data
  (the multi-node block, examples/wikitext103 and wmt14_en_de) are parsed by the tool's own parser
  (fairseq's, t2r-convert's, the recipe script's), after substituting the placeholders the doc
  defines; tests/test_recipes.py runs those recipes' --dry-run on stand-ins.
- RELEASED: README.md's "Released checkpoints" section, whose commands name fairseq's released
  checkpoints: tests/e2e/test_released.py runs them as written on tiny stand-ins of each release
  (``released_blocks``).
- NOT_RUN: a download, the whole test suite, shell text processing: the reason is listed here.
A command that fits none of these fails ``test_every_doc_command_is_classified``.
"""
import importlib.util
import math
import re
import shlex
import shutil
from pathlib import Path

import pytest
from quick_demo import QUICK, quick_demo
from tool_server import ToolServer
from utils import REPO

from tests.doc_commands import MODULES, commands, released_blocks

DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in Path(REPO, "examples").glob("*/README.md"))]
RUN_DOCS = {"README.md", "examples/language_model/README.md", "examples/translation/README.md"}
NOT_RUN = {
    "scripts/run_tests.sh": "the test suite itself",
    "bash examples/language_model/prepare-sotu-brown.sh": "downloads from npm; tests/prep runs t2r-prepare-lm on tests/data",
    "bash examples/translation/prepare-libreoffice-en-de.sh": "downloads from apt; tests/prep runs t2r-prepare-mt",
    "bash prepare-wikitext-103.sh": "fairseq's own download script",
    "mkdir -p $TEXT": "unpacks the WMT archive, not here",
    "grep ^": "compound_split_bleu.sh's lines on a generated file; tests/test_recipes.py runs the recipe's",
}
# the multi-node block's placeholders, as its text defines them (the sandbox's demo outputs for data)
PLACEHOLDERS = {"$((8 * NODE))": "0", "DATA": "runs/demo-quick/lm/data/bin",
                "softmax.pt": "runs/demo-quick/lm/teacher/checkpoint_best.pt", "HOST0": "127.0.0.1", "NODE": "0", "R": "0"}
# examples/wmt14_en_de: "--max-update N", N the user's choice (its section 4); 30000 as its section 3 does
DOC_PLACEHOLDERS = {"examples/wmt14_en_de/README.md": {"N": "30000"}}
PROMPT = "The president said that"


def blocks(doc):
    """(language, text) of every fenced bash/python block of ``doc``."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", Path(REPO, doc).read_text(), re.S | re.M)


def classify():
    """[(doc, kind, text)] in doc order; kind: run, python, parse, multinode, demo, released, or 'not run: WHY'."""
    found = []
    released = released_blocks()
    for doc in DOCS:
        for lang, text in blocks(doc):
            if doc == "README.md" and (lang, text) in released:
                found += [(doc, "released", cmd) for cmd in (commands(text) if lang == "bash" else [text])]
                continue
            if lang == "python":
                found.append((doc, "python" if doc in RUN_DOCS else "unknown", text))
                continue
            multinode = "torchrun" in text
            for cmd in commands(text):
                reason = next((why for prefix, why in NOT_RUN.items() if cmd.startswith(prefix)), None)
                program = shlex.split(cmd.split(" | ")[-1], comments=True)[0]
                if reason:
                    kind = f"not run: {reason}"
                elif program == "scripts/demo.sh":
                    kind = "demo"
                elif multinode:
                    kind = "multinode"
                elif doc in RUN_DOCS and program in MODULES:
                    kind = "run"
                elif doc not in RUN_DOCS and (program in MODULES or program in ("fairseq-preprocess", "fairseq-score",
                                                                                "python") or "=" in program):
                    kind = "parse"
                else:
                    kind = "unknown"
                found.append((doc, kind, cmd))
    return found


COMMANDS = classify()
RUN = [(doc, kind, text) for doc, kind, text in COMMANDS if kind in ("run", "python")]


def test_every_doc_command_is_classified():
    unknown = [(doc, text) for doc, kind, text in COMMANDS if kind == "unknown"]
    assert not unknown, f"commands this test neither runs, parses nor lists in NOT_RUN: {unknown}"
    assert len(RUN) >= 10


def test_the_readme_demo_commands_are_the_quick_demo_the_tests_run():
    demos = [shlex.split(text, comments=True) for doc, kind, text in COMMANDS if kind == "demo"]
    assert ["scripts/demo.sh"] in demos  # the default run (~30 min cold): the same program, no options
    quick = [argv[1:] for argv in demos if "--quick" in argv]
    assert quick == [[str(Path(a).relative_to(REPO)) if a.startswith(REPO) else a for a in QUICK]]


# --------------------------------------------------------------------------- run as written
def _sandbox(root, out):
    box = root / "docs"
    (box / "runs").mkdir(parents=True)
    # a copy: tests/demo/test_demo.py breaks one of the shared run's checkpoints on purpose
    shutil.copytree(out, box / "runs" / "demo-quick", symlinks=True)
    (box / "fairseq_t2r").symlink_to(Path(REPO, "fairseq_t2r"))
    return box


def _start(server, box, text, n, python=False):
    env = {"OMP_NUM_THREADS": "1"}
    if python:
        script = box / f"snippet{n}.py"
        script.write_text(text)
        return server.run(None, script=script, cwd=box, env=env, threads=1, check=False)
    stdin = None
    if " | " in text:
        echo, text = text.split(" | ", 1)
        words = shlex.split(echo)
        assert words[0] == "echo", echo
        stdin = box / f"stdin{n}.txt"
        stdin.write_text(" ".join(words[1:]) + "\n")
    argv = shlex.split(text)
    return server.run(MODULES[argv[0]], *argv[1:], cwd=box, env=env, threads=1, stdin=stdin, check=False)


def pipeline(root):
    """The quick demo, then every RUN command in doc order, then the mistakes the README describes."""
    out, demo = quick_demo()
    assert demo.returncode == 0, demo.stderr[-3000:]
    box = _sandbox(root, out)
    results = []
    with ToolServer() as server:
        for n, (_doc, kind, text) in enumerate(RUN):
            results.append(_start(server, box, text, n, python=kind == "python"))
        evals = [text for _, kind, text in RUN if kind == "run" and text.startswith("fairseq-eval-lm")]
        mt = [text for _, kind, text in RUN if "mt/data/bin" in text and "fairseq-interactive" in text]
        mistakes = {
            # fairseq's default --tokens-per-sample (1024) on the 128-position softmax teacher (a T2R model
            # with sinusoidal positions runs at any length: models/positions.py)
            "zero_tokens": _start(server, box, evals[0].replace(" --tokens-per-sample 128", "").replace(
                "runs/t2r-lm/checkpoint_best.pt", "runs/demo-quick/lm/teacher/checkpoint_best.pt"), "z"),
            # without --user-dir: a T2R LM, and a translation checkpoint
            "lm_no_user_dir": _start(server, box, evals[0].replace(" --user-dir fairseq_t2r", ""), "u"),
            "mt_no_user_dir": _start(server, box, mt[0].replace(" --user-dir fairseq_t2r", "").replace(
                "mt/t2r/", "mt/teacher/"), "v"),
        }
    return box, results, mistakes


def _option(text, name):
    argv = shlex.split(text.split(" | ")[-1])
    return argv[argv.index(name) + 1]


def _right_answer(box, text, res):
    """What each command must give, beyond exit 0 (assertion messages name the command)."""
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    if text.startswith("fairseq-train"):
        assert (box / _option(text, "--save-dir") / "checkpoint_best.pt").is_file()
    elif text.startswith("t2r-convert"):
        assert (box / shlex.split(text)[2]).is_file()
    elif text.startswith("t2r-compare"):
        assert "[t2r-compare] step 1 of " in out and (box / _option(text, "--out") / "report.md").is_file()
    elif text.startswith("fairseq-eval-lm"):
        tokens = int(re.search(r"Evaluated ([\d,]+) tokens", out).group(1).replace(",", ""))
        ppl = float(re.search(r"Perplexity: ([\d.]+)", out).group(1))
        assert tokens > 1000 and math.isfinite(ppl) and ppl > 1.5, (tokens, ppl)
    elif "fairseq-interactive" in text:
        texts = [line.split("\t")[2] for line in res.stdout.splitlines() if line.startswith("D-")]
        assert texts and all(t.strip() and "@@" not in t and "&apos;" not in t for t in texts), res.stdout[-2000:]
        if "--task language_modeling" in text:
            assert texts[0].startswith(PROMPT) and len(texts[0]) > len(PROMPT), texts
    else:  # the Python example: sample() continues the prompt, as text
        line = res.stdout.strip().splitlines()[-1]
        assert line.startswith(PROMPT) and len(line) > len(PROMPT) and "@@" not in line, line


@pytest.mark.parametrize("n", range(len(RUN)), ids=[f"{doc}:{text.split()[0]}#{i}" for i, (doc, _, text) in enumerate(RUN)])
def test_doc_command_runs_as_written(pipeline_result, n):
    box, results, _ = pipeline_result
    doc, _, text = RUN[n]
    try:
        _right_answer(box, text, results[n])
    except AssertionError as e:
        raise AssertionError(f"{doc}: {text}\n{e}") from None


def test_zero_token_evaluation_is_refused_in_one_line(pipeline_result):
    _, _, mistakes = pipeline_result
    res = mistakes["zero_tokens"]
    assert res.returncode == 1 and "Perplexity" not in res.stdout + res.stderr
    assert res.error_lines() == [res.stderr.strip().splitlines()[-1]]
    line = res.error_lines()[0]
    assert "evaluated 0 tokens" in line and "model's 128 positions" in line and "--tokens-per-sample 128" in line


def test_without_user_dir_fairseq_fails_as_the_readme_says(pipeline_result):
    _, _, mistakes = pipeline_result
    readme = re.sub(r"\s+", " ", Path(REPO, "README.md").read_text())
    for key, needle in (("lm_no_user_dir", "GLOBAL fairseq_t2r.errors.RequiresUserDir"),
                        ("mt_no_user_dir", "GLOBAL argparse.Namespace")):
        res = mistakes[key]
        assert res.returncode != 0 and needle in res.stderr, (key, res.stderr[-1500:])
        assert f"`{needle}`" in readme


# --------------------------------------------------------------------------- parsed
def _load_script(path):
    spec = importlib.util.spec_from_file_location(Path(path).stem, Path(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(argv):
    from fairseq import options
    from fairseq_cli import score

    from fairseq_t2r import convert
    from fairseq_t2r.command_line import parse_tool_args

    program, args = argv[0], argv[1:]
    if program in ("fairseq-train", "fairseq-eval-lm", "fairseq-generate"):
        return parse_tool_args(program, args)
    parser = {"fairseq-preprocess": options.get_preprocessing_parser, "fairseq-score": score.get_parser,
              "t2r-convert": convert.build_parser}.get(program)
    if program == "python":
        program, args = args[0], args[1:]
        parser = _load_script(program).build_parser
    return parser().parse_args(args)


PARSED = [(doc, kind, text) for doc, kind, text in COMMANDS if kind in ("parse", "multinode")]


@pytest.mark.parametrize("n", range(len(PARSED)), ids=[f"{doc}:{text.split()[0]}#{i}" for i, (doc, _, text) in enumerate(PARSED)])
def test_paper_scale_and_multinode_commands_parse(n, monkeypatch):
    monkeypatch.chdir(REPO)  # --user-dir fairseq_t2r, as the docs write it
    doc, kind, text = PARSED[n]
    variables = {}
    for other, _kind, t in PARSED[:n + 1]:  # VAR=value lines of the same doc, before this one
        if other == doc and re.fullmatch(r"\w+=\S+", t):
            name, value = t.split("=", 1)
            variables[name] = value
    if re.fullmatch(r"\w+=\S+", text):
        return
    for name, value in variables.items():
        text = text.replace(f"${name}", value)
    text = text.split(" > ")[0]
    if kind == "multinode":
        text = re.sub(r"^torchrun .*?\$\(which (\S+)\)", r"\1", text)
        for name, value in PLACEHOLDERS.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", value, text)
        text = text.replace(" ...", "")
    for name, value in DOC_PLACEHOLDERS.get(doc, {}).items():
        text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", value, text)
    args = _parse(shlex.split(text))
    if getattr(args, "arch", None):
        assert args.arch in text
