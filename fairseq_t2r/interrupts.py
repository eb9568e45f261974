"""Ctrl-C in the plugin's command-line tools: one line saying what state the work is in and what
to do, exit status 130 (128 + SIGINT, what a shell reports for a process Ctrl-C ended), and no
``KeyboardInterrupt`` traceback (one of ~180 lines when it comes from inside fairseq-train).

What is left on disk is each tool's own business, and the line must tell the truth about it:
t2r-convert writes its output atomically and removes its scratch folder on the way out, so
nothing is left and a rerun starts over; the demo keeps its finished steps and its trainings'
checkpoints, so a rerun resumes.
"""
import functools
import sys
from typing import Callable

INTERRUPTED_STATUS = 130


def one_line_on_interrupt(tool: str, what_now: str) -> Callable:
    """Decorate a tool's ``cli_main``: Ctrl-C prints ``TOOL: interrupted; WHAT_NOW`` on stderr and
    exits 130. The ``finally`` blocks and context managers inside ran first (the interrupt
    unwound through them), so the clean-up they do is done when the line appears."""

    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                sys.stdout.flush()
                print(f"{tool}: interrupted; {what_now}", file=sys.stderr, flush=True)
                raise SystemExit(INTERRUPTED_STATUS) from None

        return run

    return wrap
