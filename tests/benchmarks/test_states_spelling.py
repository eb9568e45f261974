"""The benchmarks' ``--states`` spelling (benchmarks/common.py): norms, windows and the window alone
become the options a converted layer is built with. Milliseconds: tiny layers, no timing."""
import pytest
from fairseq.modules import MultiheadAttention

from benchmarks.common import StateRow, parse_states
from fairseq_t2r.modules import T2RAttention


def test_parse_states_names_each_variant():
    assert parse_states("gate,delta,delta:sum,gate@64,window-only@32,additive") == [
        StateRow("t2r", "additive", "sum"), StateRow("t2r_gate", "gate", "sum"), StateRow("t2r_delta", "delta", "rms"),
        StateRow("t2r_delta_sum", "delta", "sum"), StateRow("t2r_gate_w64", "gate", "sum", 64),
        StateRow("t2r_window-only_w32", "window-only", "sum", 32)]
    # the additive state with a window is not the paper's T2R: it gets a row of its own
    assert parse_states("additive@16")[1] == StateRow("t2r_additive_w16", "additive", "sum", 16)
    with pytest.raises(ValueError, match="window-only@64"):
        parse_states("window-only")
    # what training.py's memory child is given reads back the same
    states = parse_states("gate@64,delta:sum,window-only@32")
    assert parse_states(",".join(r.spelling() for r in states)) == states


@pytest.mark.parametrize("spec, window, branch, state", [
    ("gate@16", 16, "both", "gate"), ("window-only@16", 16, "window", "additive"), ("delta", 0, None, "delta")])
def test_spelling_builds_the_layer_it_names(spec, window, branch, state):
    row, = parse_states(spec)[1:]
    assert row.window_options() == ({"window": window, "window_branch": branch} if window else {})
    assert row.options()["t2r_state"] == state and row.record()["window"] == window
    layer = T2RAttention.from_softmax(MultiheadAttention(16, 2, self_attention=True), "t2r", 8,
                                      state_options=row.state_options(), window_options=row.window_options())
    assert type(layer.state_update).__name__.lower().startswith(state.replace("-", ""))
    if window:
        assert (layer.window.window, layer.window.branch) == (window, branch)
    else:
        assert layer.window is None
