#!/usr/bin/env python
"""Generation speed of each state update: lm_generation.py's measurement, one T2R model per state.

State updates (``--states additive,decay,gate,gate-feature,delta,gated-delta``, ``gate-feature``
the gate with one gate per feature): one T2R model per state (``--t2r-state``/``--t2r-norm``, see fairseq_t2r/config.py), every shared tensor the additive
twin's, each prefilled with its own state and timed side by side with the additive ``t2r``
(interleaved per repeat); a state whose model build refuses it is skipped and the reason recorded.
Results go to benchmarks/results/states_lm_generation.* by default, not the speed table's files.
The other options are lm_generation.py's (the additive ``t2r`` is the only other variant unless
``--variants`` names more).

    python -m benchmarks.lm_states --states additive,decay,gate --contexts 128,2048
"""
import copy
import sys

from benchmarks import lm_generation as G
from benchmarks import lm_models
from benchmarks.common import FakeTask, parse_states
from benchmarks.plots import pyplot, save_figure
from fairseq_t2r.errors import T2RUserError


def parse_args(argv):
    """lm_generation's options and ``--states`` ([(variant, state, norm)], the additive t2r first),
    each state a timed variant."""
    p = G.build_parser()
    p.set_defaults(variants="t2r")
    p.add_argument("--states", required=True,
                   help="comma-separated state updates STATE[:NORM][@W] (additive, decay, gate, delta, gated-delta; "
                        "norm sum or rms, default rms for delta and gated-delta, else sum; @W with a W-token "
                        "softmax window, window-only@W the window alone): one T2R model per "
                        "state, timed side by side with the additive t2r (with --variants left at its default, "
                        "the only other variant)")
    a = G.parse_args(argv, p, out_name="states_lm_generation")
    a.states = parse_states(a.states)
    a.variants = list(dict.fromkeys(a.variants + [r.variant for r in a.states]))
    return a


def build_state_models(a, dictionary, t2r):
    """One T2R model per state of ``a.states`` but the additive one, every shared tensor ``t2r``'s
    (its state dict loaded: the new state tensors take their swap initialisation): ({variant:
    model}, {variant: why its build refused it})."""
    models, skipped = {}, {}
    for row in a.states[1:]:
        try:
            m = lm_models.build("t2r_transformer_lm", FakeTask(dictionary), a, lm_models.max_positions(a),
                                **row.options())
        except (ValueError, T2RUserError) as e:
            skipped[row.variant] = str(e)
            print(f"{row.variant} skipped: --states {row.spelling()} refused: {e}", flush=True)
            continue
        m.load_state_dict(copy.deepcopy(t2r.state_dict()))
        models[row.variant] = m
    return models, skipped


def config(a, skipped):
    """What the run's config records of the sweep: the states asked for, and those refused."""
    return {"states": [r.record() for r in a.states], "states_skipped": skipped}


def summarize_states(rows, s):
    """Each other state's time per token over the additive t2r's, by context (timed side by side)."""
    for v in rows[0].get("over_additive", {}):
        by_ctx = {str(r["context"]): r["over_additive"][v] for r in rows}
        worst = max(by_ctx.values())
        s.setdefault("states_over_additive", {})[v] = {"by_context": by_ctx, "max": worst}
        s["lines"].append(f"{v} / t2r (additive) per token: " + ", ".join(f"{c}: {x:.3f}" for c, x in by_ctx.items())
                          + f" (max {worst:.3f}; target <= 1.15)")


def plot_states(rows, path, title):
    """Time per token of each state update by context, and its ratio over the additive t2r."""
    plt = pyplot()

    ctx = [r["context"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    color = {}  # one colour per state in both panels
    for name in rows[0]["ms_per_token"]:
        line, = ax1.plot(ctx, [r["ms_per_token"][name] for r in rows], "s-", label=name)
        color[name] = line.get_color()
    for name in rows[0].get("over_additive", {}):
        ax2.plot(ctx, [r["over_additive"][name] for r in rows], "s-", label=name, color=color[name])
    ax2.axhline(1.15, color="k", ls=":", label="target 1.15")
    ax1.set_ylabel("ms / token (median)")
    ax1.set_title("time per generated token")
    ax2.set_ylabel("state / additive t2r, per token")
    ax2.set_title("side by side with the additive state")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ctx)
        ax.set_xticklabels([str(c) for c in ctx])
        ax.set_xlabel("context length (tokens)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, title, path)


def main(argv=None):
    return G.run(parse_args(argv), sweep=sys.modules[__name__])


if __name__ == "__main__":
    main()
