"""Figures of a monitored training run (plotting apart from computing).

:func:`plot_monitor` draws the history of a :class:`~hhld.torch.Monitor` (or a list of its rows /
its DataFrame) as one multi-panel figure: the loss; both documents' consolidation ratios ``C`` and
``C_sgd`` with the regime thresholds; ``tr Sigma`` and ``B_simple``; the per-sample coverage; the
regime as coloured bands behind every panel; phase-transition, regime-change and clipping events
as vertical lines.
"""
from __future__ import annotations

import math

__all__ = ["plot_monitor"]

_REGIME_COLORS = {"quantum": "#d8e6f7", "transition": "#fbe7c6", "intermediate": "#efefef", "classical": "#dcefd9"}
_EVENT_STYLE = {"phase_transition": ("#c0392b", "-"), "regime": ("#7f8c8d", ":"), "clipped": ("#8e44ad", "--"),
                "skipped_step": ("#e67e22", "--"), "nonfinite_gradient": ("#000000", "-"),
                "nonfinite_value": ("#000000", "-")}


def _column(rows, key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(v)
    return xs, ys


def plot_monitor(source, path=None, *, events=None, thresholds=None, title=None, figsize=(11, 9)):
    """A figure of a monitored run; ``source`` is a Monitor, a list of rows or a DataFrame.

    ``path`` saves the figure (PNG/PDF/SVG by extension). Returns the matplotlib Figure. Panels whose
    quantity never appears in the rows say so instead of staying empty.
    """
    import matplotlib
    import matplotlib.lines
    import matplotlib.patches
    import matplotlib.pyplot as plt

    rows = source
    if hasattr(source, "history"):
        rows = source.history
        events = source.events if events is None else events
        thresholds = thresholds or getattr(source, "thresholds", None)
    elif hasattr(source, "to_dict"):
        rows = source.to_dict("records")
    rows = list(rows)
    if not rows:
        raise ValueError("plot_monitor: no rows to plot (run some steps with log_every reached, or call flush())")
    events = list(events or [])
    fig, axes = plt.subplots(4, 1, sharex=True, figsize=figsize, constrained_layout=True)
    steps = [r["step"] for r in rows]

    def bands(ax):
        prev = None
        for r in rows:
            reg = r.get("regime")
            if reg in _REGIME_COLORS:
                lo = prev if prev is not None else r["step"] - r.get("steps", 1)
                ax.axvspan(lo, r["step"], color=_REGIME_COLORS[reg], lw=0, zorder=0)
            prev = r["step"]
        for e in events:
            if e.get("event") == "regime" and e.get("initial"):
                continue  # the first row's label is not a change
            col, ls = _EVENT_STYLE.get(e.get("event"), ("#95a5a6", ":"))
            ax.axvline(e["step"], color=col, ls=ls, lw=1, alpha=0.8, zorder=1)

    def empty(ax, what):
        ax.text(0.5, 0.5, f"no {what} in these rows", transform=ax.transAxes, ha="center", va="center",
                color="0.4")

    ax = axes[0]
    bands(ax)
    xs, ys = _column(rows, "loss")
    if xs:
        ax.plot(xs, ys, color="k", lw=1.5)
        if all(y > 0 for y in ys):
            ax.set_yscale("log")
    else:
        empty(ax, "loss (pass it to mon.step(loss))")
    ax.set_ylabel("loss")

    ax = axes[1]
    bands(ax)
    any_c = False
    for key, col, lab in (("C", "tab:blue", "C = |g|²/(D d)"), ("C_sgd", "tab:orange", "C_sgd = |g|²/(lr/B)"),
                          ("C_measured", "tab:green", "C_measured (unbiased |G|²)")):
        xs, ys = _column(rows, key)
        if xs and all(y > 0 for y in ys):
            ax.plot(xs, ys, color=col, lw=1.3, label=lab)
            any_c = True
    if any_c:
        ax.set_yscale("log")
        if thresholds is not None:
            ax.axhline(thresholds.quantum_below, color="tab:blue", ls="--", lw=0.8)
            ax.axhline(thresholds.classical_above, color="tab:green", ls="--", lw=0.8)
        ax.legend(fontsize=8, loc="best")
    else:
        empty(ax, "consolidation ratio")
    ax.set_ylabel("consolidation ratio")

    ax = axes[2]
    bands(ax)
    xs, ys = _column(rows, "tr_sigma")
    if xs:
        ax.plot(xs, ys, color="tab:red", lw=1.3, label="tr Σ")
        if all(y > 0 for y in ys):
            ax.set_yscale("log")
        ax.set_ylabel("tr Σ", color="tab:red")
        xb, yb = _column(rows, "b_simple")
        if xb:
            ax2 = ax.twinx()
            ax2.plot(xb, yb, color="tab:purple", lw=1.0, ls="--", label="B_simple")
            ax2.set_ylabel("B_simple", color="tab:purple")
            if all(y > 0 for y in yb):
                ax2.set_yscale("log")
    else:
        empty(ax, "gradient-noise statistics (tier 1)")
        ax.set_ylabel("tr Σ")

    ax = axes[3]
    bands(ax)
    xs, ys = _column(rows, "noise_coverage")
    if xs:
        ax.plot(xs, ys, color="tab:gray", lw=1.3, drawstyle="steps-post")
        ax.set_ylim(-0.05, 1.05)
        xc, yc = _column(rows, "clip_coef")
        if xc and (any(y < 1 for y in yc) or any(r.get("clipped_steps") for r in rows)):
            ax.plot(xc, yc, color="#8e44ad", lw=1.0, ls="--", label="clip coefficient")
            ax.legend(fontsize=8, loc="lower left")
    else:
        empty(ax, "coverage")
    ax.set_ylabel("per-sample coverage")
    ax.set_xlabel("step")
    ax.set_xlim(min(steps) - rows[0].get("steps", 1), max(steps))
    seen = {r.get("regime") for r in rows}
    handles = [matplotlib.patches.Patch(color=c, label=k) for k, c in _REGIME_COLORS.items() if k in seen]
    handles += [matplotlib.lines.Line2D([], [], color=c, ls=ls, label=k.replace("_", " "))
                for k, (c, ls) in _EVENT_STYLE.items()
                if any(e.get("event") == k and not e.get("initial") for e in events)]
    if title:
        fig.suptitle(title)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
