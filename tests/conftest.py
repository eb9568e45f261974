import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/utils.py

import pytest  # noqa: E402
import torch  # noqa: E402

# one intra-op thread: the test models are tiny, and spinning OpenMP threads slow everything
# down several-fold whenever another process shares the 2 cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lm_teacher():
    """The synthetic LM corpus and the tiny softmax teacher the command-line tests share
    (tool_server.shared_lm: made once per session): {"root", "data", "teacher"}."""
    from tool_server import shared_lm

    return shared_lm()


# ------------------------------------------------------------------ end-to-end pipelines in the background
# The heavy end-to-end runs (train a teacher, swap, finetune, evaluate; the quick demo; the
# benchmarks' smoke run; the Triton checks, which need a process of their own) are chains of runs
# in other processes. A test module that has one defines ``pipeline(root) -> result``; it starts in
# a thread as soon as collection selects a test that uses the ``pipeline_result`` fixture, and runs
# on the second core while the in-process tests (single-threaded, see above) use the first. The
# fixture waits for it. A pipeline must not use torch's global random generator in this process:
# the main thread's tests seed and read it meanwhile.
class Pipeline:
    def __init__(self, func):
        self.root = Path(tempfile.mkdtemp(prefix=f"t2r-{func.__module__}-"))
        self.result = self.error = None
        self.started, self.ended, self.waited = time.monotonic(), None, None
        self.thread = threading.Thread(target=self._run, args=(func,), daemon=True, name=func.__module__)
        self.thread.start()

    def _run(self, func):
        try:
            self.result = func(self.root)
        except BaseException as e:  # raised again in the test that waits for it
            self.error = e
        self.ended = time.monotonic()

    def wait(self):
        if self.waited is None:
            self.waited = time.monotonic()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


_PIPELINES = {}


def pytest_collection_modifyitems(items):
    # the tests that wait for a pipeline run last (each module's in its order): the main thread
    # runs everything else while the pipelines go on
    waits = [item for item in items if "pipeline_result" in getattr(item, "fixturenames", ())]
    waiting = set(waits)
    items[:] = [item for item in items if item not in waiting] + waits


def pytest_collection_finish(session):
    # after -k/-m deselection: only the pipelines of tests that will run
    for item in session.items:
        module = getattr(item, "module", None)
        if "pipeline_result" in getattr(item, "fixturenames", ()) and module.__name__ not in _PIPELINES:
            _PIPELINES[module.__name__] = Pipeline(module.pipeline)


@pytest.fixture(scope="module")
def pipeline_result(request):
    """What this test module's ``pipeline(root)`` returned (started at collection, waited for here)."""
    return _PIPELINES[request.module.__name__].wait()


def pytest_terminal_summary(terminalreporter):
    # where the suite's time goes: each pipeline's run, and how long the main thread waited for it
    # (the suite is CPU-bound on 2 cores, so a pipeline's span is its share of both, not its cost alone)
    if not _PIPELINES:
        return
    t0 = min(p.started for p in _PIPELINES.values())
    terminalreporter.section("background pipelines (seconds from the first start)")
    for name, p in sorted(_PIPELINES.items(), key=lambda kv: kv[1].ended or float("inf")):
        end = f"{p.ended - t0:6.1f}" if p.ended else "   n/a"
        waited = f", waited for from {p.waited - t0:6.1f}" if p.waited else ""
        terminalreporter.write_line(f"{name}: ran {p.started - t0:5.1f} to {end}{waited}")


def pytest_sessionfinish():
    for p in _PIPELINES.values():
        if not p.thread.is_alive():
            shutil.rmtree(p.root, ignore_errors=True)
