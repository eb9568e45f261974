"""The quick demo, run once per test session and shared: tests/demo/test_demo.py checks the demo
itself, tests/test_docs.py runs the READMEs' commands on its outputs. Each module's ``pipeline``
(tests/conftest.py starts them in background threads) calls ``quick_demo()``; the first call runs
it, the others wait for that run."""
import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from tool_server import ToolServer, tools
from utils import DATA, REPO

QUICK = ["--quick", "--lm-text", f"{DATA}/lm/english.txt",
         "--mt-src", f"{DATA}/mt/libreoffice.en", "--mt-tgt", f"{DATA}/mt/libreoffice.de"]

_LOCK = threading.Lock()
_RUN = {}
# the demos the tests run keep their teachers in a cache of their own, empty at the session's start:
# the quick demo trains its teachers, and a later demo with the same settings reuses them
CACHE = tempfile.mkdtemp(prefix="t2r-teacher-cache-")
atexit.register(shutil.rmtree, CACHE, True)
ENV = {"OMP_NUM_THREADS": "1", "FAIRSEQ_T2R_CACHE": CACHE}


def demo(*args, server=None):
    """``python -m fairseq_t2r.demo ARGS``, forked from a tool server (fairseq already imported)."""
    return (server or tools()).run("fairseq_t2r.demo", *args, cwd=REPO, env=ENV,
                                   check=False, timeout=1800)


def quick_demo():
    """(OUT, result) of ``t2r-demo QUICK --out OUT``, from a tool server of its own (the main one
    answers the in-process tests meanwhile). OUT is removed at exit."""
    with _LOCK:
        if "run" not in _RUN:
            root = Path(tempfile.mkdtemp(prefix="t2r-quick-demo-"))
            atexit.register(shutil.rmtree, root, True)
            out = root / "run"
            with ToolServer() as server:
                _RUN["run"] = (out, demo(*QUICK, "--out", str(out), server=server))
        return _RUN["run"]
