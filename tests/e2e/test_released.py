"""README.md's "Released checkpoints" commands, run as written on tiny stand-ins of each release
(tests/release_models.py: stock fairseq models in the release's format), in a sandbox where the
releases' own paths (``bart.large.cnn/model.pt``, ``m2m-bin``, ...) name the stand-ins; plus the
mBART (``translation_from_pretrained_bart``) release commands, and the mistakes that must stop in
one line. (Each finetuning's softmax control, a figure only: ``python -m benchmarks.released_controls``.)

What the tests change in the commands, and only that: ``--max-update N`` -> 4, ``--update-freq N``
-> 1, and the Python example's BPE (the stand-ins use subword-nmt, not GPT-2's). The commands,
those changes and the sandbox are tests/doc_commands.py's (the benchmark runs them too).
"""
import re
import shlex

import pytest
from release_models import released
from tool_server import ToolServer

from tests.doc_commands import LANGS, MBART, as_run, last_valid_loss, make_sandbox, released_commands, start_command

TEST_SENTENCES = 16  # release_models.LINES["test"]


# the mistakes (a command of the list, changed): each must stop with one line naming the fix
def _mistakes(cmds):
    m2m = next(t for _, t in cmds if t.startswith("fairseq-generate m2m-bin"))
    mbart = MBART[2]
    return {
        "wrong_task": ("fairseq-generate m2m-bin --user-dir fairseq_t2r --path runs/t2r-m2m100/checkpoint_best.pt "
                       "--task translation -s de -t en --gen-subset test --beam 4",
                       "use --task translation_multi_simple_epoch --lang-pairs en-de,de-en --encoder-langtok src "
                       "--decoder-langtok"),
        "no_decoder_langtok": (m2m.replace(" --decoder-langtok", ""), "pass --decoder-langtok"),
        "no_lang_pairs": (re.sub(r" --lang-pairs \S+", "", m2m), "needs --lang-pairs"),
        "no_langs": (mbart.replace(" --langs " + LANGS, ""), "needs --langs"),
        "mbart_as_translation": (mbart.replace("--task translation_from_pretrained_bart", "--task translation")
                                 .replace(" --langs " + LANGS, ""), "--task translation_from_pretrained_bart --langs " + LANGS),
    }


def pipeline(root):
    rel = released()
    box = make_sandbox(root, rel)
    cmds = [(kind, as_run(text)) for kind, text in released_commands()]
    results, mistakes = {}, {}
    with ToolServer() as server:
        for n, (kind, text) in enumerate(cmds):
            results[n] = start_command(server, box, kind, text, n).wait(timeout=900)
        for name, (text, _) in _mistakes(cmds).items():
            mistakes[name] = start_command(server, box, "bash", text, name).wait(timeout=300)
    return box, cmds, results, mistakes


@pytest.fixture(scope="module")
def run(pipeline_result):
    return pipeline_result


def _bleu(output):
    return float(re.search(r"BLEU4? = ([\d.]+)", output).group(1))


@pytest.mark.parametrize("n", range(len(released_commands())),
                         ids=[t.split(" ")[0] + f"#{i}" for i, (_, t) in enumerate(released_commands())])
def test_release_command_runs_as_written(run, n):
    box, cmds, results, _ = run
    kind, text = cmds[n]
    res = results[n]
    assert res.returncode == 0, f"{text}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    out = res.stdout + res.stderr
    if text.startswith("t2r-convert"):
        assert (box / shlex.split(text)[2]).is_file()
        assert re.search(r"copied \d+ tensors unchanged, initialised \d+ new tensors: decoder\.layers\.\{0,1\}\.self_attn\.feature_map", out)
        print(f"\n{text}: " + re.search(r"arch \S+, copied \d+ tensors unchanged, initialised \d+ new tensors", out).group(0))
    elif text.startswith("fairseq-train"):
        assert (box / re.search(r"--save-dir (\S+)", text).group(1) / "checkpoint_best.pt").is_file()
        t2r = last_valid_loss(out)
        arch = re.search(r"--arch (\S+)", text).group(1)
        print(f"\n{text.split()[1]} {arch}: valid loss after 4 updates {t2r:.3f}")
        assert 0 < t2r < 50
    elif text.startswith("fairseq-generate"):
        hypos = [line for line in res.stdout.splitlines() if line.startswith("H-")]
        assert len(hypos) == TEST_SENTENCES, res.stdout[-2000:]
        print(f"\n{text.split()[1]}: {len(hypos)} beam-4 hypotheses, BLEU {_bleu(res.stdout):.2f} (mechanics only)")
    elif text.startswith("fairseq-eval-lm"):
        assert re.search(r"Perplexity: [\d.]+", out) and int(re.search(r"Evaluated ([\d,]+) tokens", out).group(1).replace(",", "")) > 500
    else:  # the Python example: one summary, as text
        printed = res.stdout.strip()
        assert printed.startswith("['") and printed.endswith("']") and "@@" not in printed, printed[-500:]


@pytest.mark.parametrize("name", ["wrong_task", "no_decoder_langtok", "no_lang_pairs", "no_langs", "mbart_as_translation"])
def test_release_task_mistakes_stop_in_one_line(run, name):
    _, cmds, _, mistakes = run
    res = mistakes[name]
    expected = _mistakes(cmds)[name][1]
    assert res.returncode == 1 and len(res.error_lines()) == 1, (res.returncode, res.stderr[-2000:])
    assert res.error_lines() == [res.stderr.strip().splitlines()[-1]]
    assert expected in res.error_lines()[0], res.error_lines()
