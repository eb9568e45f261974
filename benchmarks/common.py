"""What the benchmarks share: the machine description the demo's report uses too
(``fairseq_t2r/machine.py``), the decoding-state measure the demo uses too
(``fairseq_t2r/demo/measure.py``), a stand-in fairseq task, the model-size options, the clock and
the start-up line."""
import os
import time

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


def state_options(state: str, norm: str) -> dict:
    """T2RAttention's ``state_options`` of a ``--states`` name (``t2r_`` + each key: the model's args):
    a registered state, or a spelling one of them declares (``gate-feature``: the gate per feature);
    an ``@W`` suffix is ``window_options``'."""
    from fairseq_t2r.modules.states import STATE_UPDATES

    state = state.partition("@")[0]
    state = "additive" if state == WINDOW_ONLY else state  # the window alone: the state is never read
    for name, cls in STATE_UPDATES.items():
        if state in cls.spellings:
            return {"state": name, **cls.spellings[state], "norm": norm}
    return {"state": state, "norm": norm}


def window_options(state: str) -> dict:
    """T2RAttention's ``window_options`` of a ``--states`` name (``t2r_`` + each key: the model's args):
    ``STATE@W`` a W-token softmax window beside the state (``--t2r-window W``), ``window-only@W`` the
    window alone (``--t2r-window-branch window``); {} without a window."""
    name, _, w = state.partition("@")
    return {"window": int(w), "window_branch": "window" if name == WINDOW_ONLY else "both"} if w else {}


def default_norm(state: str) -> str:
    """The norm a ``--states`` name implies (its state's first: rms for the delta rules, else sum)."""
    from fairseq_t2r.modules.states import STATE_UPDATES

    cls = STATE_UPDATES.get(state_options(state, "")["state"])
    return "sum" if cls is None else cls.norms[0]


def spelling(state: str, norm: str) -> str:
    """The ``--states`` item that ``parse_states`` reads back as (``state``, ``norm``): STATE:NORM[@W]."""
    name, _, w = state.partition("@")
    return f"{name}:{norm}" + (f"@{w}" if w else "")


def parse_states(spec: str):
    """``--states`` 'additive,decay,gate,delta:rms,gate@64,window-only@64' -> [(variant, state, norm)]:
    each state with the norm it names after ':' (default rms for delta and gated-delta, sum
    otherwise) and the window it names after '@' (``window_options``; the state keeps its '@W'). The
    additive state with the sum norm, the paper's T2R, is variant ``t2r`` and always comes first (the
    states are timed against it); another is ``t2r_STATE`` (``t2r_STATE_NORM`` with a norm other
    than its default, ``_wW`` with a window). The names are not checked here: the model build
    refuses what it lacks."""
    out = [("t2r", "additive", "sum")]
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
        state = state + (f"@{w}" if w else "")
        if (state, norm) != ("additive", "sum") and variant not in [v for v, _, _ in out]:
            out.append((variant, state, norm))
    return out


