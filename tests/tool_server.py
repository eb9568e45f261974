"""Run fairseq's command-line tools many times without paying fairseq's import each time.

A server process imports torch, fairseq and the fairseq_cli tools once (but never the plugin:
the tools load it through ``--user-dir`` as usual, and a run without it really lacks it), then
forks one child per run with ``fairseq_t2r/toolrun.py`` (the demo's steps run the same way):
``python -m MODULE ARGS`` semantics, output in two files, exit status and stderr as the
interpreter's own. The bad-input, resume and end-to-end tests run such tools dozens of times.

Protocol (JSON lines): ``{"op": "start", **toolrun.Run fields}`` -> ``{"pid"}``;
``{"op": "wait", "pid", "timeout"}`` -> ``{"rc", "timed_out"}``.

In the tests: ``tools().run(module, *args, cwd=...)`` or ``tools().start(...)`` / ``job.wait()``
for runs that go on while the test acts (kill, a second rank).
"""
import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "fairseq_t2r")


def _load_toolrun():
    """fairseq_t2r/toolrun.py by its path: importing it as part of the package would load the plugin."""
    spec = importlib.util.spec_from_file_location("_t2r_toolrun", os.path.join(USER_DIR, "toolrun.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------- server side
def _serve():
    toolrun = _load_toolrun()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the imports print must not corrupt the protocol
    toolrun.preload()
    assert "fairseq_t2r" not in sys.modules, "the server must not load the plugin itself"
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.pop("op") == "start":
            # its own process group: a Ctrl-C meant for pytest does not reach the tools
            pid = toolrun.start(toolrun.Run(**req, own_group=True))
            proto.write(json.dumps({"pid": pid}) + "\n")
        else:
            rc, timed_out = toolrun.wait(req["pid"], req["timeout"])
            proto.write(json.dumps({"rc": rc, "timed_out": timed_out}) + "\n")


# ---------------------------------------------------------------------------------- client side
class Result:
    def __init__(self, args, returncode, stdout, stderr, timed_out=False):
        self.args, self.returncode, self.stdout, self.stderr, self.timed_out = args, returncode, stdout, stderr, timed_out

    @property
    def output(self):
        return self.stdout + self.stderr

    def error_lines(self):
        return [line for line in self.stderr.splitlines() if line.startswith("fairseq_t2r: error:")]


class Job:
    def __init__(self, server, pid, args, out, err):
        self.server, self.pid, self.args, self.out, self.err = server, pid, args, out, err
        self.result = None

    def read_output(self):
        with open(self.out, errors="replace") as o, open(self.err, errors="replace") as e:
            return o.read(), e.read()

    def kill(self, sig=9):
        os.kill(self.pid, sig)

    def wait(self, timeout=300, check=False):
        if self.result is None:
            reply = self.server._call({"op": "wait", "pid": self.pid, "timeout": timeout})
            self.result = Result(self.args, reply["rc"], *self.read_output(), timed_out=reply["timed_out"])
        res = self.result
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(self.args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res


class ToolServer:
    def __init__(self):
        self.logdir = tempfile.mkdtemp(prefix="t2r-tools-")
        self.jobs = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError("tool server did not start")

    def _call(self, req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("tool server died")
        return json.loads(line)

    def start(self, module, *args, cwd=None, env=None, script=None, threads=None, stdin=None) -> Job:
        """Start ``python -m MODULE ARGS`` (or ``python SCRIPT ARGS``) in a forked child;
        ``threads``: torch CPU threads of the child (default: torch's own choice);
        ``stdin``: a file the child reads as its standard input (default: /dev/null)."""
        out = os.path.join(self.logdir, f"{len(self.jobs)}.out")
        err = os.path.join(self.logdir, f"{len(self.jobs)}.err")
        args = [str(a) for a in args]
        for path in (out, err):  # exist from the start: a test may read them while the run goes on
            open(path, "w").close()
        reply = self._call({"op": "start", "module": module, "script": str(script) if script else None,
                            "args": args, "cwd": str(cwd or os.getcwd()), "stdout": out, "stderr": err,
                            "stdin": str(stdin) if stdin else None, "env": env or {}, "threads": threads})
        self.jobs.append(Job(self, reply["pid"], [module or str(script), *args], out, err))
        return self.jobs[-1]

    def run(self, module, *args, check=True, timeout=300, **how) -> Result:
        """``start`` (same keywords), then wait for the end; ``check``: raise if the exit status is not 0."""
        return self.start(module, *args, **how).wait(timeout=timeout, check=check)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop the server, and the runs nobody waited for (a session that ended early)."""
        for job in self.jobs:
            if job.result is None:
                try:
                    job.kill()
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.logdir, ignore_errors=True)


_SERVER = None
_SHARED = {}


def tools() -> ToolServer:
    """The one tool server of this pytest process (started on first use, stopped at exit)."""
    global _SERVER
    if _SERVER is None or _SERVER.proc.poll() is not None:
        _SERVER = ToolServer()
        atexit.register(_SERVER.close)
    return _SERVER


# ------------------------------------------------------------------- shared tiny LM for CLI tests
TINY_MODEL = [
    "--decoder-layers", "2", "--decoder-embed-dim", "32", "--decoder-input-dim", "32",
    "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4",
    "--share-decoder-input-output-embed",
]
TINY_TRAIN = [
    "--task", "language_modeling", "--tokens-per-sample", "32", "--max-tokens", "256",
    "--optimizer", "adam", "--lr", "2e-3", "--num-workers", "0", "--cpu", "--seed", "1",
    "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "1",
]


def t2r_finetune_args(lm, save_dir, updates, *extra):
    """fairseq-train arguments that finetune the shared teacher as a T2R model for ``updates`` updates."""
    return [lm["data"], "--user-dir", USER_DIR, "--arch", "t2r_transformer_lm", *TINY_MODEL, *TINY_TRAIN,
            "--finetune-from-model", lm["teacher"], "--max-update", updates, "--save-dir", save_dir, *extra]


def synthetic_text(path, lines, seed):
    """Sentences from a small fixed Markov chain over 40 words: learnable, made in milliseconds."""
    import random

    rng = random.Random(seed)
    successors = {w: random.Random(w).sample(range(40), 4) for w in range(40)}
    with open(path, "w") as f:
        for _ in range(lines):
            w, words = rng.randrange(40), []
            for _ in range(rng.randint(6, 24)):
                words.append(f"w{w}")
                w = rng.choice(successors[w])
            f.write(" ".join(words) + "\n")


def shared_lm():
    """A binarised synthetic LM corpus and a softmax transformer_lm teacher trained on it for a few
    updates, made once per test session (tiny: 2 layers, dim 32). Returns a dict of paths."""
    if _SHARED:
        return _SHARED
    root = tempfile.mkdtemp(prefix="t2r-shared-lm-")
    atexit.register(shutil.rmtree, root, True)
    for seed, (split, n) in enumerate((("train", 600), ("valid", 60), ("test", 60))):
        synthetic_text(os.path.join(root, f"{split}.txt"), n, seed=seed)
    data = os.path.join(root, "data")
    server = tools()
    server.run("fairseq_cli.preprocess", "--only-source", "--trainpref", "train.txt", "--validpref",
               "valid.txt", "--testpref", "test.txt", "--destdir", data, "--workers", "1", cwd=root, threads=1)
    teacher_dir = os.path.join(root, "softmax")
    server.run("fairseq_cli.train", data, "--arch", "transformer_lm", *TINY_MODEL, *TINY_TRAIN,
               "--max-update", "20", "--save-dir", teacher_dir, "--no-last-checkpoints", cwd=root, threads=1)
    _SHARED.update(root=root, data=data, teacher=os.path.join(teacher_dir, "checkpoint_best.pt"))
    return _SHARED


if __name__ == "__main__":
    _serve()
