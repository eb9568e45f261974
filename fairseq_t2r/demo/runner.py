"""Runs the demo's steps: stock fairseq tools and small Python functions, side by side, resumable.

Each step runs in a child forked from this process, which imported torch and fairseq once
(``fairseq_t2r/toolrun.py``): a fairseq tool then starts in milliseconds instead of ~5 s (the
quick demo runs ~40 of them), exactly as ``python -m fairseq_cli.train ARGS`` would, with its
output in the step's log file and one intra-op thread per job: two OpenMP pools spinning against
each other on a 2-core machine make everything several-fold slower.

A step is finished when its marker ``steps/NAME.json`` exists; the marker holds the step's
command, so a rerun with other settings in the same folder is refused instead of mixing results.
An interrupted ``fairseq-train`` resumes from its own ``checkpoint_last.pt``.
"""
import json
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from .. import toolrun
from ..checkpoint import atomic_write
from ..errors import T2RUserError

# the command-line names users know, for the report and the progress lines
TOOL_NAMES = {
    "fairseq_cli.train": "fairseq-train",
    "fairseq_cli.eval_lm": "fairseq-eval-lm",
    "fairseq_cli.generate": "fairseq-generate",
    "fairseq_t2r.convert": "t2r-convert",
}


UPDATES = re.compile(r'"num_updates": "(\d+)"')
# what a step costs, for the estimate of the time left: a training its updates, anything else this
# many (the quick preset's evaluations and data steps take about as long as 10 of its updates)
OTHER_STEP_COST = 10


@dataclass
class Step:
    name: str                       # "lm/teacher": also the marker and log file names
    title: str                      # what the progress line says
    module: Optional[str] = None    # a tool run as ``python -m module args``...
    args: List[str] = field(default_factory=list)
    func: Optional[Callable[[], None]] = None  # ...or a Python function (data prep, measures)
    deps: List[str] = field(default_factory=list)
    describe: str = ""              # for function steps: the equivalent command, for the report
    cost: Optional[float] = None    # for the time-left estimate, in training updates (default: see ``cost``)

    def command(self) -> str:
        if self.module is None:
            return self.describe
        return " ".join([TOOL_NAMES.get(self.module, f"python -m {self.module}")] + [shlex.quote(a) for a in self.args])


class Runner:
    def __init__(self, out: Path, jobs: int = 1, threads: int = 1, log=print):
        self.out, self.jobs, self.threads, self.log = Path(out), max(1, jobs), threads, log
        self.ran: List[str] = []  # steps this invocation ran (the others were reused)
        self.clock = Progress()
        (self.out / "steps").mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ markers and logs
    def marker(self, step: Step) -> Path:
        return self.out / "steps" / (step.name.replace("/", "__") + ".json")

    def logfile(self, step: Step) -> Path:
        return logfile(self.out, step.name)

    def finished(self, step: Step) -> Optional[dict]:
        m = self.marker(step)
        if not m.exists():
            return None
        info = json.loads(m.read_text())
        if info["command"] != step.command():
            raise T2RUserError(
                f"{self.out} holds step '{step.name}' finished with other settings; "
                f"use another --out folder (or delete {m} to redo that step)")
        return info

    def _mark(self, step: Step, seconds: float):
        atomic_write(self.marker(step), json.dumps({"command": step.command(), "seconds": round(seconds, 2),
                                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")

    # ------------------------------------------------------------------ running
    def run(self, steps: List[Step]):
        """Runs every step whose dependencies are finished, up to ``jobs`` at a time.

        On a failure, lets the running steps finish (their results are kept), then raises a
        one-line error naming the step, its last error line and its log.
        """
        names = [s.name for s in steps]
        assert len(set(names)) == len(names), "duplicate step names"
        pending = {s.name: s for s in steps}
        done = set()
        self.clock = Progress(total=len(steps), costs={s.name: cost(s) for s in steps})
        for s in steps:
            info = self.finished(s)
            if info is not None:
                self.clock.reused(s.name)
                self.log(f"[{s.name}] finished earlier ({info['seconds']:.0f} s): reusing it")
                done.add(s.name)
                del pending[s.name]
        running = {}  # pid -> (step, start time)
        try:
            failed = self._loop(pending, running, done)
        except BaseException:
            # Ctrl-C reaches the steps too (same process group); a kill of this process does not:
            # end the steps, so nothing keeps running behind the user's back, and wait for them
            # (a few seconds at most), so that the prompt comes back after the last one ended
            for pid in running:
                toolrun.kill(pid, signal.SIGTERM)
            for pid in running:
                toolrun.wait(pid, timeout=10)
            raise
        if failed is not None:
            s, rc = failed
            raise T2RUserError(
                f"step '{s.name}' ({s.title}) failed with exit status {rc}: {self.last_error(s)} "
                f"-- full log: {self.logfile(s)}; fix the cause and rerun the same command: finished steps are kept")

    def _loop(self, pending, running, done):
        failed = None
        while pending or running:
            if failed is None:
                for s in list(pending.values()):
                    if len(running) >= self.jobs:
                        break
                    if all(d in done for d in s.deps):
                        del pending[s.name]
                        self.log(f"[{s.name}] {s.title} -- step {self.clock.start()} of {self.clock.total}, "
                                 f"{self.clock.times()}")
                        running[self._start(s)] = (s, time.monotonic())
            if not running:
                if failed is None and pending:
                    missing = sorted({d for s in pending.values() for d in s.deps} - done - set(pending))
                    raise RuntimeError(f"steps depend on unknown steps: {missing}")
                break
            pid, rc = self._wait(running)
            s, t0 = running.pop(pid)
            seconds = time.monotonic() - t0
            if rc == 0:
                self._mark(s, seconds)
                self.ran.append(s.name)
                done.add(s.name)
                self.clock.finished(s.name)
                self.log(f"[{s.name}] done in {seconds:.0f} s ({self.clock.times()})")
            elif failed is None:
                failed = (s, rc)
        return failed

    def _wait(self, running, every: float = 30.0):
        """Waits for any step to end, saying every ``every`` seconds how far the trainings are."""
        next_report = time.monotonic() + every
        while True:
            for pid in running:
                rc = toolrun.poll(pid)
                if rc is not None:
                    return pid, rc
            time.sleep(0.1)
            if time.monotonic() >= next_report:
                next_report += every
                for s, t0 in running.values():
                    done = self.progress(s)
                    if done:
                        self.log(f"[{s.name}] {done} ({time.monotonic() - t0:.0f} s)")

    def progress(self, step: Step) -> str:
        if "--max-update" not in step.args:
            return ""
        total = step.args[step.args.index("--max-update") + 1]
        try:
            text = self.logfile(step).read_text(errors="replace")
        except OSError:
            return ""
        found = UPDATES.findall(text)
        return f"update {found[-1]} of {total}" if found else ""

    def last_error(self, step: Step) -> str:
        try:
            lines = [ln.strip() for ln in self.logfile(step).read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        for ln in reversed(lines):
            if "error" in ln.lower() or "Error" in ln:
                return ln[-300:]
        return lines[-1][-300:] if lines else "no output"

    def _start(self, step: Step) -> int:
        return toolrun.start(toolrun.Run(
            module=step.module, args=step.args, func=step.func, stdout=str(self.logfile(step)), append=True,
            threads=self.threads, banner=f"### {time.strftime('%Y-%m-%d %H:%M:%S')} {step.command()}"))


def logfile(out: Path, name: str) -> Path:
    """The log of step ``name`` in the working folder ``out``."""
    return Path(out) / "logs" / (name.replace("/", "__") + ".log")


def cost(step: Step) -> float:
    """A step's relative cost: its own ``cost``, else a training's updates, else OTHER_STEP_COST."""
    if step.cost is not None:
        return step.cost
    if "--max-update" in step.args:
        return float(step.args[step.args.index("--max-update") + 1])
    return float(OTHER_STEP_COST)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Where a run stands: steps started so far, time elapsed, and the time left estimated from this
    invocation's pace (elapsed time per unit of ``cost`` finished; reused steps cost nothing)."""

    def __init__(self, total: int = 0, costs: Optional[dict] = None):
        self.total, self.costs = total, costs or {}
        self.t0 = time.monotonic()
        self.started = self.done_cost = 0
        self.left_cost = sum(self.costs.values())

    def reused(self, name: str):
        self.started += 1
        self.left_cost -= self.costs[name]

    def start(self) -> int:
        self.started += 1
        return self.started

    def finished(self, name: str):
        self.done_cost += self.costs[name]
        self.left_cost -= self.costs[name]

    def times(self) -> str:
        elapsed = time.monotonic() - self.t0
        if not self.done_cost:
            return f"{clock(elapsed)} elapsed"
        left = elapsed * max(0.0, self.left_cost) / self.done_cost
        return f"{clock(elapsed)} elapsed, about {clock(left)} left"
