"""What the benchmarks share: the machine description the demo's report uses too
(``fairseq_t2r/machine.py``), the decoding-state measure the demo uses too
(``fairseq_t2r/demo/measure.py``), a stand-in fairseq task, the model-size options, the clock and
the start-up line."""
import os
import time
from typing import NamedTuple

from fairseq_t2r.demo.measure import state_bytes  # noqa: F401
from fairseq_t2r.machine import machine  # noqa: F401


class FakeTask:
    """What ``build_model`` reads off a fairseq task: its dictionaries."""

    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = self.dictionary = dictionary


def make_dictionary(vocab: int):
    """A fairseq Dictionary of ``vocab`` symbols (the 4 special ones included)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    return d


def add_model_options(p):
    """The size options every decoding benchmark takes (defaults: the paper's base model)."""
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--feature-map", default="t2r")
    p.add_argument("--feature-dim", type=int, default=32)


def clock(name: str):
    """The timer ``--clock`` names: wall (perf_counter, the figure to report) or cpu (process time)."""
    return time.perf_counter if name == "wall" else time.process_time


def set_up_torch(a):
    """Torch threads and seed as asked (``a.threads``, ``a.seed``); prints and returns the machine
    description."""
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    mach = machine()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (cpu_count {os.cpu_count()}), "
          f"{mach['platform']}, {mach['cpu']}", flush=True)
    return mach


WINDOW_ONLY = "window-only"  # a --states name: the sliding window alone, no linear branch (always with @W)


class StateRow(NamedTuple):
    """One item of ``--states``, as ``parse_states`` reads it."""
    variant: str     # the run's name for it: t2r, t2r_gate, t2r_delta_sum, t2r_gate_w64, ...
    state: str       # a registered state, a spelling one declares (gate-feature), or window-only
    norm: str        # sum or rms
    window: int = 0  # W of STATE@W (a W-token softmax window beside the state); 0: none

    def state_options(self) -> dict:
        """T2RAttention's ``state_options`` (``t2r_`` + each key: the model's args)."""
        from fairseq_t2r.modules.states import STATE_UPDATES

        state = "additive" if self.state == WINDOW_ONLY else self.state  # the window alone: never read
        for name, cls in STATE_UPDATES.items():
            if state in cls.spellings:
                return {"state": name, **cls.spellings[state], "norm": self.norm}
        return {"state": state, "norm": self.norm}

    def window_options(self) -> dict:
        """T2RAttention's ``window_options``: ``--t2r-window W`` beside the state, the window alone
        (``--t2r-window-branch window``) for window-only; {} without a window."""
        if not self.window:
            return {}
        return {"window": self.window, "window_branch": "window" if self.state == WINDOW_ONLY else "both"}

    def options(self) -> dict:
        """Both, as a model's args (``t2r_`` + each key)."""
        return {f"t2r_{k}": v for k, v in {**self.state_options(), **self.window_options()}.items()}

    def spelling(self) -> str:
        """The ``--states`` item that ``parse_states`` reads back as this row: STATE:NORM[@W]."""
        return f"{self.state}:{self.norm}" + (f"@{self.window}" if self.window else "")

    def record(self) -> dict:
        """What a result file's config says of it."""
        return {"variant": self.variant, "state": self.state, "norm": self.norm, "window": self.window}


def default_norm(state: str) -> str:
    """The norm a ``--states`` name implies (its state's first: rms for the delta rules, else sum)."""
    from fairseq_t2r.modules.states import STATE_UPDATES

    cls = STATE_UPDATES.get(StateRow("", state, "").state_options()["state"])
    return "sum" if cls is None else cls.norms[0]


def parse_states(spec: str) -> list:
    """``--states`` 'additive,decay,gate,delta:rms,gate@64,window-only@64' -> [StateRow]: each state
    with the norm it names after ':' (default rms for delta and gated-delta, sum otherwise) and the
    window it names after '@'. The additive state with the sum norm and no window, the paper's T2R, is
    variant ``t2r`` and always comes first (the states are timed against it); another is ``t2r_STATE``
    (``t2r_STATE_NORM`` with a norm other than its default, ``_wW`` with a window). The names are not
    checked here: the model build refuses what it lacks."""
    out = [StateRow("t2r", "additive", "sum")]
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        head, _, w = item.partition("@")
        state, _, norm = head.partition(":")
        if state == WINDOW_ONLY and not w:
            raise ValueError(f"--states {item}: the window alone needs its size, e.g. {WINDOW_ONLY}@64")
        default = default_norm(state)
        norm = norm or default
        variant = "t2r_" + state + ("" if norm == default else "_" + norm) + (f"_w{w}" if w else "")
        row = StateRow(variant, state, norm, int(w or 0))
        if row[1:] != out[0][1:] and variant not in [r.variant for r in out]:
            out.append(row)
    return out


