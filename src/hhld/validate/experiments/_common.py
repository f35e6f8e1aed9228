"""Helpers shared by the physics experiments (fits, ensembles, figures)."""
from __future__ import annotations

import math

import numpy as np

from ..base import Cell


def linfit(x, y, w=None) -> dict:
    """Weighted least squares y = a + b x: slope, intercept, their standard errors, R²."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    w = np.ones_like(x) if w is None else np.asarray(w, float)[ok]
    if x.size < 2:
        return {"slope": math.nan, "intercept": math.nan, "slope_se": math.nan, "r2": math.nan, "n": int(x.size)}
    W = w.sum()
    xm, ym = (w * x).sum() / W, (w * y).sum() / W
    sxx = (w * (x - xm) ** 2).sum()
    b = (w * (x - xm) * (y - ym)).sum() / sxx
    a = ym - b * xm
    res = y - a - b * x
    ss_res = (w * res ** 2).sum()
    ss_tot = (w * (y - ym) ** 2).sum()
    dof = max(x.size - 2, 1)
    se = math.sqrt(ss_res / dof / sxx) if x.size > 2 else math.nan
    return {"slope": float(b), "intercept": float(a), "slope_se": float(se),
            "r2": float(1 - ss_res / ss_tot) if ss_tot > 0 else math.nan, "n": int(x.size)}


def mean_se(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def group(results: list[tuple[Cell, dict]], *fields: str) -> dict:
    """Group results by the given key fields: {(values...): [result, ...]} in first-seen order."""
    out: dict = {}
    for c, r in results:
        k = tuple(c.key[f] for f in fields)
        out.setdefault(k, []).append(r)
    return out


def figure(ncols: int = 1, nrows: int = 1, w: float = 5.2, h: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def fmt(x: float, d: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    return f"{x:.{d}g}"
