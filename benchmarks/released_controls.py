#!/usr/bin/env python
"""README's "Released checkpoints" finetuning commands on the tests' tiny stand-ins, each beside
its softmax control (the same command with the softmax arch, from the softmax checkpoint, with its
sizes): the validation loss after the tests' 4 updates, T2R against softmax, printed and saved.

    python -m benchmarks.released_controls [--out DIR]   # ~1.5 min on 2 cores; DIR/released_controls.json

The commands are taken and changed exactly as tests/e2e/test_released.py does (``--max-update 4``,
``--update-freq 1``: tests/doc_commands.py, which both import from the repository root), on the
stand-ins of tests/release_models.py (stock fairseq models in each release's format, trained a few
Adam steps): the figures only say that each converted command trains like its softmax twin on the
same data, nothing about quality. The test checks what the commands must do; the controls fed
only a printed figure there, so they run here, not in the suite.
"""
import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from tests.doc_commands import SANDBOX, as_run, last_valid_loss, make_sandbox, released_commands, start_command
from tests.release_models import model_flags, released
from tests.tool_server import ToolServer


def control(text):
    """The softmax control of a T2R finetuning command: the softmax arch, from the softmax checkpoint
    (with its sizes: fairseq-train takes a softmax arch's sizes from the command line alone)."""
    folder = re.search(r"--finetune-from-model (\S+)/t2r\d?\.pt", text).group(1)
    teacher = next(path for path in SANDBOX if path.startswith(folder + "/") and path.endswith(".pt"))
    text = re.sub(r"--arch t2r_(\S+)", r"--arch \1", text)
    text = re.sub(r"--finetune-from-model \S+", f"--finetune-from-model {teacher}", text)
    text = re.sub(r"--save-dir (\S+)", r"--save-dir \1-control", text)
    return " ".join([text, *model_flags(SANDBOX[teacher])[2:]])


def valid_loss(res):
    """The last validation loss of a finished run (the tests' own parser); a failed run stops the script."""
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(res.args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return last_valid_loss(res.stdout + res.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="folder for released_controls.json (default: a temp folder)")
    out = Path(parser.parse_args().out or tempfile.mkdtemp(prefix="t2r-released-controls-"))
    start = time.time()
    box = make_sandbox(Path(tempfile.mkdtemp(prefix="t2r-released-controls-box-")), released())
    # the conversions first (the finetunings start from them), then each finetuning beside its control
    cmds = [as_run(text) for kind, text in released_commands() if kind == "bash"]
    rows = []
    with ToolServer() as server:
        for n, text in enumerate(cmds):
            if text.startswith("t2r-convert"):
                start_command(server, box, "bash", text, n).wait(timeout=900, check=True)
        for n, text in enumerate(cmds):
            if not text.startswith("fairseq-train"):
                continue
            t2r, softmax = start_command(server, box, "bash", text, n), start_command(server, box, "bash", control(text), f"c{n}")
            valid = {"t2r": valid_loss(t2r.wait(timeout=900)), "softmax": valid_loss(softmax.wait(timeout=900))}
            arch = re.search(r"--arch (\S+)", text).group(1)
            rows.append({"data": text.split()[1], "arch": arch, "valid_loss_t2r": valid["t2r"],
                         "valid_loss_softmax": valid["softmax"]})
            print(f"{text.split()[1]:10s} {arch:32s} valid loss after 4 updates: T2R {valid['t2r']:.3f}, "
                  f"softmax control {valid['softmax']:.3f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "released_controls.json").write_text(json.dumps({"rows": rows, "seconds": round(time.time() - start)}, indent=1))
    print(f"wrote {out / 'released_controls.json'}")


if __name__ == "__main__":
    main()
