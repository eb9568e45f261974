"""The speed benchmarks' figures, and matplotlib set up once for every benchmark's plot."""


def pyplot():
    """matplotlib.pyplot, set up once for every benchmark's plot: the file backend (Agg), and
    matplotlib's logger at WARNING (fairseq sets the root logger to DEBUG)."""
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, title, path):
    """Title, tight layout, PNG at 120 dpi, figure closed (matplotlib)."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


STYLE = {
    "softmax": ("o-", "softmax (KV cache)"),
    "t2r": ("s-", "T2R (recurrent state, merged projections)"),
    "t2r_unmerged": ("s--", "T2R, unmerged projections"),
    "floor_proj": ("^:", "floor: projections only, no state"),
    "floor_none": ("v:", "floor: no attention at all"),
}


def lm_generation(rows, path, title):
    """lm_generation.py's figure: time per token by context, and the state's size."""
    plt = pyplot()
    from matplotlib import ticker

    ctx = [r["context"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for name, (style, label) in STYLE.items():
        if all(name in r["ms_per_token"] for r in rows):
            ax1.plot(ctx, [r["ms_per_token"][name] for r in rows], style, label=label)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("context length (tokens)")
    ax1.set_ylabel("ms / token (median, log)")
    ax1.set_title("time per generated token")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3, which="both")
    if all(r["softmax_state_bytes"] is not None for r in rows):  # measured (not in a --states run)
        ax2.plot(ctx, [r["softmax_state_MB"] for r in rows], "o-", label="softmax (KV cache)")
    ax2.plot(ctx, [r["t2r_state_MB"] for r in rows], "s-", label="T2R [S | z]")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("context length (tokens)")
    ax2.set_ylabel("incremental state (MB, log)")
    ax2.set_title("decoder state memory")
    ax2.legend()
    ax2.grid(alpha=0.3, which="both")
    for ax in (ax1, ax2):
        ax.set_xticks(ctx)
        ax.set_xticklabels([str(c) for c in ctx])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mt_decoding(rows, a, path, title):
    """mt_decoding.py's figure: decoder time per step along each sweep."""
    plt = pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    sweeps = [("source", "src", a.fixed_tgt, "tgt"), ("target", "tgt", a.fixed_src, "src")]
    for ax, (sweep, xkey, fixed, fixed_key) in zip(axes, sweeps):
        for beam, style in zip(a.beams, ("-", "--", ":", "-.")):
            pts = sorted((r[xkey], r) for r in rows if r["sweep"] == sweep and r["beam"] == beam)
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ax.plot(xs, [r["softmax_decoder_ms_per_step"] for _, r in pts], "o" + style, color="C0",
                    label=f"softmax, beam {beam}")
            ax.plot(xs, [r["t2r_decoder_ms_per_step"] for _, r in pts], "s" + style, color="C1",
                    label=f"T2R linear cross, beam {beam}")
            if "t2r_softmax_cross_decoder_ms_per_step" in pts[0][1]:
                ax.plot(xs, [r["t2r_softmax_cross_decoder_ms_per_step"] for _, r in pts], "^" + style, color="C2",
                        label=f"T2R softmax cross, beam {beam}")
        ax.set_xscale("log", base=2)
        xs = sorted({r[xkey] for r in rows if r["sweep"] == sweep})
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"{sweep} length (tokens); {fixed_key} length {fixed}")
        ax.set_ylabel("decoder ms per step ((generate - encoder) / steps)")
        ax.set_title(f"decoding time vs {sweep} length")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training(result, path):
    """training.py's figure: one layer's fwd + bwd time, and its peak memory (False: no layer part)."""
    plt = pyplot()

    layer = result.get("layer")
    if not layer:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    L = [r["length"] for r in layer]
    ax1.plot(L, [r["ms"]["softmax"] for r in layer], "o-", label="fairseq MultiheadAttention (SDPA)")
    ax1.plot(L, [r["ms"]["t2r"] for r in layer], "s-", label="T2RAttention")
    for n in layer[0].get("over_additive", {}):
        ax1.plot(L, [r["ms"][n] for r in layer], "d--", label=f"T2RAttention, {n}")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("sequence length (tokens, batch 1)")
    ax1.set_ylabel("ms per fwd + bwd (median, log)")
    ax1.set_title("one attention layer, training step")
    ax1.set_xticks(L)
    ax1.set_xticklabels([str(x) for x in L])
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3, which="both")
    mem = [r for r in layer if "peak_MB" in r]
    if mem:
        Lm = [r["length"] for r in mem]
        ax2.plot(Lm, [r["peak_MB"]["softmax"] for r in mem], "o-", label="softmax step")
        ax2.plot(Lm, [r["peak_MB"]["softmax"] + r["softmax_mask_MB"] for r in mem], "o:",
                 label="softmax step + its causal mask")
        ax2.plot(Lm, [r["peak_MB"]["t2r"] for r in mem], "s-", label="T2R step")
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xticks(Lm)
        ax2.set_xticklabels([str(x) for x in Lm])
        ax2.set_xlabel("sequence length (tokens, batch 1)")
        ax2.set_ylabel("peak RSS increase, MB (log)")
        ax2.set_title("memory of one fwd + bwd step")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3, which="both")
    else:
        ax2.axis("off")  # no memory measured (--mem-lengths)
    m = result["machine"]
    fig.suptitle(f"{result['config']['dim']}d/{result['config']['heads']}h, T2R k={result['config']['feature_dim']}, "
                 f"fp32, {m['cpu']} x{m['threads']} threads, torch {m['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
