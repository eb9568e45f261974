"""Run command-line tools in children forked from an interpreter that imported them once.

``python -m fairseq_cli.train ARGS`` spends ~5 s importing torch and fairseq before it reads its
arguments. A process that ran :func:`preload` instead forks one child per run: the child points
its fds 0/1/2 at files (by default /dev/null and a log), resets logging to a fresh interpreter's, sets
``sys.argv`` and runs the tool module as ``__main__`` exactly as ``python -m MODULE ARGS`` does
(or a script, as ``python SCRIPT ARGS``, or a Python function). Its exit status and its stderr
are what the interpreter would give: the SystemExit code (a message code printed, exit 1), or a
traceback and exit 1.

Users: the demo's step runner (``fairseq_t2r/demo/runner.py``) and the tests' tool server
(``tests/tool_server.py``). This module imports nothing from the package and only the standard
library at import time: the tool server loads it by its path, so that the server never imports
the plugin itself (a tool run without ``--user-dir`` must really lack it).
"""
import importlib
import logging
import os
import runpy
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

FAIRSEQ_TOOLS = ("fairseq_cli.train", "fairseq_cli.eval_lm", "fairseq_cli.generate", "fairseq_cli.preprocess")


def preload(modules: Sequence[str] = FAIRSEQ_TOOLS):
    """Import ``modules`` (and so everything they import) once, so that each forked run starts at once.

    The modules themselves leave ``sys.modules`` again: runpy re-runs a tool as ``__main__`` as
    ``python -m`` does, and must not find it there.
    """
    for name in modules:
        importlib.import_module(name)
        del sys.modules[name]
    # torch.optim imports torch._dynamo when a run builds its first optimizer: ~4 s per training
    importlib.import_module("torch._dynamo")
    # importing the tools may have configured logging: each run starts with a fresh configuration
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)


# glibc's mallopt parameters (malloc.h) and the value both get (1 GiB): a run's tensors come from the heap
# and its top is never given back to the OS
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BELOW = 1 << 30


def keep_freed_memory():
    """Let glibc's malloc keep freed memory for the next allocation instead of returning it to the OS.

    By default a tensor above glibc's mmap threshold (128 KiB in a fresh process, adaptive after)
    gets a mapping of its own and every free trims the heap, so each training step maps, zero-fills
    and unmaps its activations again. Measured on the demo's LM teacher (400 updates run as the demo
    runs them, two side by side on 2 cores): 3.0M page faults and 8.8 s in the kernel against 65k
    and 0.4 s, 60.7 s against 50.8 s, the same losses and peak memory (``docs/DESIGN.md``). A
    user's own ``MALLOC_*_THRESHOLD_`` settings are left alone; other C libraries (no ``mallopt``) too.
    """
    mallopt = glibc_mallopt()
    if mallopt is None or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD):
        mallopt(param, KEEP_BELOW)


def glibc_mallopt():
    """The C library's ``mallopt`` (glibc), or None."""
    import ctypes

    try:
        return ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return None


@dataclass
class Run:
    """One run: a tool module (``python -m module args``), a script (``python script args``) or a function."""

    module: Optional[str] = None
    args: List[str] = field(default_factory=list)
    script: Optional[str] = None
    func: Optional[Callable[[], None]] = None
    stdin: Optional[str] = None     # file for fd 0 (None: /dev/null)
    stdout: str = os.devnull        # file for fd 1
    stderr: Optional[str] = None    # file for fd 2 (None: the stdout file)
    append: bool = False            # append to the files (a resumed step's log) instead of truncating
    cwd: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)  # added to the environment
    threads: Optional[int] = None   # torch intra-op threads (None: torch's own choice)
    banner: Optional[str] = None    # a first line written to stdout (the command, in a log)
    own_group: bool = False         # a process group of its own: Ctrl-C at the terminal does not reach it


def start(run: Run) -> int:
    """Fork a child that carries out ``run``; returns its pid (wait for it with :func:`wait` or :func:`poll`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _carry_out(run)
    except SystemExit as e:  # as the interpreter ends on SystemExit
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # never return into the parent's code (a server loop, a test session), never run its atexit
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _carry_out(run: Run) -> int:
    if run.own_group:
        os.setpgid(0, 0)
    if run.cwd:
        os.chdir(run.cwd)
    source = os.open(run.stdin or os.devnull, os.O_RDONLY)
    os.dup2(source, 0)
    os.close(source)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if run.append else os.O_TRUNC)
    for fd, path in ((1, run.stdout), (2, run.stderr)):
        if path is None:
            os.dup2(1, 2)
            continue
        f = os.open(path, flags, 0o644)
        os.dup2(f, fd)
        os.close(f)
    # the parent's sys.stdout/stderr need not be fds 1/2 (a server's protocol pipe, pytest's capture)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(run.env)
    keep_freed_memory()
    if run.banner:
        print(run.banner, flush=True)
    if run.threads:
        import torch

        # runs side by side on a small machine: OpenMP pools spinning against each other make a
        # tiny model's update take seconds instead of milliseconds
        torch.set_num_threads(run.threads)
    # a fresh interpreter has no logging configuration: let the tool's basicConfig apply
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    if run.func is not None:
        run.func()
    elif run.script is not None:
        sys.argv = [run.script, *map(str, run.args)]
        sys.path[0] = os.path.dirname(os.path.abspath(run.script))  # as ``python SCRIPT`` sets it
        runpy.run_path(run.script, run_name="__main__")
    else:
        sys.argv = [run.module, *map(str, run.args)]
        runpy.run_module(run.module, run_name="__main__", alter_sys=True)
    return 0


def poll(pid: int) -> Optional[int]:
    """The exit code of child ``pid`` if it has ended (reaping it), else None. A negative code: killed by that signal."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def wait(pid: int, timeout: Optional[float] = None) -> Tuple[int, bool]:
    """Wait for child ``pid``; past ``timeout`` seconds, SIGKILL it. Returns (exit code, timed out)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        rc = poll(pid)
        if rc is not None:
            return rc, False
        if deadline is not None and time.monotonic() > deadline:
            kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), True
        time.sleep(0.02)


def kill(pid: int, sig: int = signal.SIGKILL):
    """Send ``sig`` to child ``pid`` unless it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
