"""Experiment 1: escape ("tunneling") rate between the wells of a double well vs D.

Measured: the escape rate from Langevin ensembles (``TransitionObserver``: transitions
between the well cores ``|θ₁| ≥ 0.5`` per unit time spent having last visited a core) of the
1-D double well ``(θ²−1)²`` and the documents' 2-D double well ``(θ₁²−1)² + θ₂²`` at several D
(reference drift, μ = 1).

Control, like for like: as dt → 0 that estimator tends to the core-to-core rate of transition
path theory, ``k = ν_AB/ρ_A`` (reactive flux over the probability of having last visited A),
computed exactly from the Fokker-Planck generator (:func:`hhld.fokker_planck.transition_rate`, a
grid with cell centres on ``±core``). It is not λ₁/2: over this D range the core rate is 4-12%
above half the spectral gap. At a finite step the ensemble checks the cores only every dt, so
it misses excursions between steps: to first order the cores are reached ``β√(2D dt)`` further
out (β = −ζ(1/2)/√(2π) = 0.5826, the continuity correction for discretely monitored barriers of
Broadie, Glasserman & Kou 1997). The control compares the ensemble with the exact rate between
the shifted cores; the time-step bias (against the unshifted, dt → 0 rate) is reported in a row
of its own. Beside them: the Fokker-Planck λ₁/2, Kramers' rate (leading order in D), and the
documents' ``P = exp(−S/ħ)``, ħ = √(ηD), with both barrier forms (the reference code's
straight line between the minima and the integral along the minimum-energy path). The two laws
``log k = a − b/√D`` (documents) and ``log k = a − b/D`` (Arrhenius / Kramers) are fitted, with
R², slopes, and slopes on the low-D and high-D halves: a law that describes the data has a
slope that does not drift with the range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt, group, linfit, mean_se


@dataclass(frozen=True)
class TunnelingConfig(ExperimentConfig):
    plan_fields: ClassVar[tuple[str, ...]] = ExperimentConfig.plan_fields + ("control_tol",)

    D_values_1d: tuple[float, ...] = (0.2, 0.23, 0.26, 0.3, 0.35, 0.41, 0.48, 0.56)
    D_values_2d: tuple[float, ...] = (0.2, 0.25, 0.3, 0.37, 0.45, 0.56)
    n_particles: int = 800
    t_max: float = 60.0
    dt: float = 0.005
    eta: float = 0.1  # the documents' Example 4 value, for ħ = √(ηD)
    fp_cells_1d: int = 240
    fp_cells_2d: int = 96
    core: float = 0.5
    core_cells_1d: int = 50   # grid cells between 0 and the core edge for the exact core rate (1-D)
    core_cells_2d: int = 25   # the same on the 2-D grid (θ₂ with the same cell width)
    estimator_cells: int = 20  # the same for the exact expectation of the estimator (1-D labelled chain)
    control_tol: float = 0.01  # control tolerance (+ z SE): the residual of the continuity correction
    seeds: tuple[int, ...] = (0,)


    @classmethod
    def full(cls):
        return cls(D_values_1d=(0.12, 0.14, 0.16, 0.19, 0.22, 0.26, 0.31, 0.37, 0.45, 0.55, 0.7),
                   D_values_2d=(0.14, 0.17, 0.2, 0.25, 0.3, 0.37, 0.45, 0.56),
                   n_particles=4000, t_max=400.0, dt=0.0025, fp_cells_2d=128, seeds=(0, 1, 2))

    @classmethod
    def smallest(cls):
        return cls(D_values_1d=(0.25, 0.4), D_values_2d=(), n_particles=1000, t_max=60.0)


def _landscape(name: str):
    from hhld.landscapes import DoubleWell

    return DoubleWell(dim=1 if name == "1d" else 2)


def fp_rate(name: str, D: float, cells_1d: int, cells_2d: int) -> float:
    """Half the Fokker-Planck spectral gap λ₁ (μ = 1): the two-state rate of the wells."""
    from hhld.fokker_planck import FokkerPlanck

    ls = _landscape(name)
    if name == "1d":
        fp = FokkerPlanck(ls, D=D, cells=cells_1d, box=[(-2.2, 2.2)], check=False)
    else:
        fp = FokkerPlanck(ls, D=D, cells=cells_2d, box=[(-2.2, 2.2), (-1.8, 1.8)], check=False)
    return float(fp.spectrum(3).rates[1]) / 2.0


def monitoring_shift(D: float, dt: float) -> float:
    """``β√(2D dt)``, β = −ζ(1/2)/√(2π) ≈ 0.5826: how much further out a boundary is, to first order,
    when a diffusion with noise ``√(2D) dW`` is checked only every dt (Broadie, Glasserman & Kou 1997)."""
    from scipy.special import zeta

    return float(-zeta(0.5) / math.sqrt(2 * math.pi) * math.sqrt(2.0 * D * dt))


def _aligned_fp(name: str, D: float, core: float, per_core: int):
    """The Fokker-Planck problem of the 1-D / 2-D double well (μ = 1) on a grid whose cell centres are the
    multiples of ``h = core/per_core`` along θ₁ (so ``±core`` are centres), θ₁ in about [−2.2, 2.2]."""
    from hhld.fokker_planck import FokkerPlanck

    h = core / per_core
    n = int(math.ceil(2.2 / h))
    box = [(-(n + 0.5) * h, (n + 0.5) * h)]
    cells = [2 * n + 1]
    if name == "2d":
        box.append((-1.8, 1.8))
        cells.append(int(math.ceil(3.6 / h)))
    return FokkerPlanck(_landscape(name), D=D, cells=cells, box=box, check=False), 1e-9 * h


@lru_cache(maxsize=256)  # pure functions of their arguments: the seeds of one setting share them
def exact_core_rate(name: str, D: float, core: float, per_core: int) -> float:
    """The exact rate of transitions between the cores ``θ₁ ≤ −core`` and ``θ₁ ≥ core`` (transition path
    theory, from the Fokker-Planck generator on a grid with ``per_core`` cells between 0 and ``core``):
    the ``t → ∞`` limit of the ensemble estimator. ``name``: ``"1d"`` or ``"2d"``."""
    from hhld.fokker_planck import transition_rate

    fp, eps = _aligned_fp(name, D, core, per_core)
    return float(transition_rate(fp, lambda th: th[:, 0] <= -core + eps, lambda th: th[:, 0] >= core - eps).rate_ab)


@lru_cache(maxsize=256)
def exact_estimator_rate(D: float, core: float, t_max: float, per_core: int, start: float = -1.0) -> float:
    """The exact expectation of the ensemble estimator itself (transitions between the cores per unit time
    spent having visited one) for particles started at ``θ₁ = start`` and run to ``t_max``, from the 1-D
    generator: θ₁ moves on its own in every ``DoubleWell(dim=d)``, so this holds in every d. Lower than
    :func:`exact_core_rate` by the first passage from the bottom of the well (about 1% at t = 60)."""
    from hhld.fokker_planck.mfpt import expected_transitions

    fp, eps = _aligned_fp("1d", D, core, per_core)
    x = fp.grid.axes[0]
    rho0 = np.zeros(fp.grid.size)
    rho0[int(np.argmin(np.abs(x - start)))] = 1.0
    return float(expected_transitions(fp, lambda th: th[:, 0] <= -core + eps, lambda th: th[:, 0] >= core - eps,
                                      rho0, t_max).rate)


MAX_EVENTS = 2_000_000  # transitions recorded per run for the per-particle spread (beyond: Poisson errors)


def measure_escape_rate(ls, D: float, n: int, t_max: float, dt: float, seed, core: float = 0.5,
                        mu: float = 1.0) -> dict:
    """Ensemble escape rate (transitions / time in a well) started in the left well; ``seed`` an int or a
    tuple of ints (the entropy of ``np.random.default_rng``).

    ``rate_se`` is the Poisson error ``k/√count`` scaled by ``√dispersion``, the variance-to-mean ratio of
    the particles' transition counts (recrossings right after a transition make counts over-dispersed,
    ~1.1 here; 1 when more than :data:`MAX_EVENTS` transitions leave it unmeasured)."""
    from hhld.dynamics import Simulation, TransitionObserver

    th0 = np.zeros((n, ls.dim))
    th0[:, 0] = -1.0
    obs = TransitionObserver(every=1, core=core, max_events=MAX_EVENTS)
    sim = Simulation(ls, th0, dt=dt, D=D, mu=mu, rng=np.random.default_rng(seed), observers=[obs],
                     check_every=200)
    sim.run(int(round(t_max / dt)))
    k, se = obs.rate()
    dispersion = 1.0
    if 0 < obs.count <= MAX_EVENTS:
        counts = np.bincount(np.asarray([e[1] for e in obs.events], dtype=np.int64), minlength=n)
        dispersion = max(float(counts.var(ddof=1) / counts.mean()), 1.0) if n > 1 else 1.0
    fpt = obs.first_passage
    return {"rate": k, "rate_se": se * math.sqrt(dispersion), "dispersion": dispersion,
            "transitions": int(obs.count), "time_in_wells": float(obs.occupancy_time),
            "escaped_fraction": float(np.mean(np.isfinite(fpt))),
            "mean_first_passage_observed": float(np.nanmean(fpt)) if np.isfinite(fpt).any() else math.nan}


def bonferroni_z(m: int, family_error: float = 0.05) -> float:
    """The two-sided normal quantile for ``m`` tests at a family-wise error ``family_error``."""
    from scipy.stats import norm

    return float(norm.ppf(1.0 - family_error / (2.0 * max(m, 1))))


@register
class TunnelingRate(Experiment):
    name = "tunneling_rate"
    title = "Tunneling (escape) rate vs temperature D"
    config_cls = TunnelingConfig
    description = (
        "Escape rates between the wells of the 1-D and 2-D double wells measured from Langevin ensembles "
        "(μ = 1) at several D, against the exact core-to-core rate from the Fokker-Planck generator (control, "
        "with the time-step bias reported apart), the Fokker-Planck λ₁/2, Kramers' rate (leading order) and the "
        "documents' "
        "P = exp(−S/ħ) (ħ = √(ηD), both barrier forms); fits of log rate vs 1/√D (documents) and vs 1/D "
        "(Arrhenius/Kramers) with R² and slope stability over sub-ranges of D.")

    def cells(self, config, seeds):
        cells = [Cell(self.name, {"landscape": "1d", "D": D}, s) for D in config.D_values_1d for s in seeds]
        cells += [Cell(self.name, {"landscape": "2d", "D": D}, s) for D in config.D_values_2d for s in seeds]
        return cells

    def run_cell(self, config, cell):
        from hhld.theory import kramers_rate

        name, D = cell.key["landscape"], float(cell.key["D"])
        ls = _landscape(name)
        # one random stream per (seed, D, landscape): the cells are independent samples
        stream = (cell.seed, int(round(D * 1e6)), ls.dim)
        out = measure_escape_rate(ls, D, config.n_particles, config.t_max, config.dt, stream, config.core)
        out["fp_rate"] = fp_rate(name, D, config.fp_cells_1d, config.fp_cells_2d)
        out["kramers_rate"] = float(kramers_rate(ls, ls.minima()[0], saddle=ls.saddles()[0], D=D, warn=False).rate)
        per_core = config.core_cells_1d if name == "1d" else config.core_cells_2d
        out["core_rate"] = exact_core_rate(name, D, config.core, per_core)
        out["estimator_rate"] = exact_estimator_rate(D, config.core, config.t_max, config.estimator_cells)
        out["estimator_rate_dt"] = exact_estimator_rate(D, config.core + monitoring_shift(D, config.dt), config.t_max,
                                                        config.estimator_cells)
        return out

    def summarize(self, config, results):
        rows, data = [], {}
        fig, axes = figure(3, 1, w=5.0, h=4.0)
        groups = group(results, "landscape", "D")
        lands = sorted({k[0] for k in groups})
        worst_ctl = 0.0
        for name in lands:
            m = _measure_landscape(name, groups, config)
            worst_ctl = max(worst_ctl, float(np.max(np.abs(m["dev"]))))
            data[name] = _landscape_data(m)
            _plot_landscape(axes[0], name, m, config, first=name == lands[0])
            rows += [_control_row(name, m, config), _bias_row(name, m, config), _law_row(name, m),
                     _arrhenius_row(name, m), _code_row(name, m)]
        _label_axes(axes[0])
        fig.tight_layout()
        notes = (f"Escape rate = transitions between the cores |θ₁| ≥ {config.core} per unit time spent having "
                 "visited one, "
                 f"pooled over seeds; N = {config.n_particles}, t = {config.t_max}, dt = {config.dt}, μ = 1. "
                 f"Largest deviation from its exact expectation at this dt: {worst_ctl:.1%}. The documents' "
                 "Example 4 evaluates P between "
                 "the two minima, where the straight-line form has ΔL = 0, so P = 1 at every D and its 1/√D fit "
                 "has slope 0.")
        return ExperimentReport(rows=rows, figures={"rates": fig}, notes=notes, data=data)


# ------------------------------------------------------------------ summarize: measures, rows, figure
def _measure_landscape(name, groups, config) -> dict:
    """Everything the rows of one landscape use: the pooled rates per D (seeds pooled: total transitions /
    total time in the wells, the ML rate), the exact expectations, the documents' P, and the fits."""
    from hhld.theory import barrier_action_path, barrier_action_straight, hbar, wkb_tunneling_probability

    ls = _landscape(name)
    a, b = ls.minima()
    S_straight = barrier_action_straight(ls, a, b, config.eta)
    S_path = barrier_action_path(ls, a, b, config.eta)
    Ds = sorted(D for (n, D) in groups if n == name)
    rate, rate_se, fpk, kr, pdoc_path, pdoc_straight, core, est, est_dt = ([] for _ in range(9))
    for D in Ds:
        rs = groups[(name, D)]
        cnt = sum(r["transitions"] for r in rs)
        tt = sum(r["time_in_wells"] for r in rs)
        k = cnt / tt if tt > 0 else math.nan
        disp = float(np.mean([r.get("dispersion", 1.0) for r in rs]))
        rate.append(k)
        rate_se.append(k * math.sqrt(disp / cnt) if cnt else math.nan)
        fpk.append(rs[0]["fp_rate"])
        kr.append(rs[0]["kramers_rate"])
        core.append(rs[0]["core_rate"])
        est.append(rs[0]["estimator_rate"])
        est_dt.append(rs[0]["estimator_rate_dt"])
        h = hbar(config.eta, D)
        pdoc_path.append(float(wkb_tunneling_probability(S_path, h)))
        pdoc_straight.append(float(wkb_tunneling_probability(S_straight, h)))
    Ds_a, rate, rate_se, fpk, kr, core, est, est_dt = map(np.asarray, (Ds, rate, rate_se, fpk, kr, core, est, est_dt))
    y = np.log(rate)
    wts = (rate / rate_se) ** 2
    half = len(Ds_a) // 2
    lo, hi = slice(0, half), slice(half, None)  # Ds sorted ascending: lo = low D
    stab = {}
    for lname, xf in (("sqrt", lambda d: 1 / np.sqrt(d)), ("inv", lambda d: 1 / d)):
        s_lo = linfit(xf(Ds_a[lo]), y[lo], wts[lo])["slope"] if half >= 2 else math.nan
        s_hi = linfit(xf(Ds_a[hi]), y[hi], wts[hi])["slope"] if len(Ds_a) - half >= 2 else math.nan
        stab[lname] = {"slope_lowD": s_lo, "slope_highD": s_hi,
                       "ratio": s_lo / s_hi if s_hi not in (0, math.nan) else math.nan}
    return {
        "ls": ls, "minimum": a, "Ds": Ds, "Ds_a": Ds_a, "rate": rate, "rate_se": rate_se, "fpk": fpk, "kr": kr,
        "core": core, "est": est, "est_dt": est_dt, "pdoc_path": pdoc_path, "pdoc_straight": pdoc_straight,
        "S_path": S_path, "S_straight": S_straight, "y": y,
        "dev": rate / est_dt - 1.0,            # against the exact expectation at this dt (shifted cores)
        "dev_se": rate_se / est_dt,
        "bias": rate / est - 1.0,              # the time-step bias, against the dt -> 0 expectation
        "bias_pred": est_dt / est - 1.0,
        "fit_sqrt": linfit(1 / np.sqrt(Ds_a), y, wts), "fit_inv": linfit(1 / Ds_a, y, wts), "stab": stab,
        # documents' predicted 1/√D slope: log P = −S/√(ηD)
        "doc_slope": -S_path / math.sqrt(config.eta),
        # fits of the FP rates (noise-free) for the same comparison
        "fpfit_inv": linfit(1 / Ds_a, np.log(fpk)),
    }


def _landscape_data(m) -> dict:
    return {"D": m["Ds"], "rate": m["rate"].tolist(), "rate_se": m["rate_se"].tolist(), "fp_rate": m["fpk"].tolist(),
            "kramers_rate": m["kr"].tolist(), "P_doc_path": m["pdoc_path"], "P_doc_straight": m["pdoc_straight"],
            "S_path": m["S_path"], "S_straight": m["S_straight"], "fit_inv_sqrt_D": m["fit_sqrt"],
            "fit_inv_D": m["fit_inv"], "slope_stability": m["stab"], "doc_slope_inv_sqrt_D": m["doc_slope"],
            "fp_fit_inv_D": m["fpfit_inv"], "core_rate": m["core"].tolist(), "estimator_rate": m["est"].tolist(),
            "estimator_rate_dt": m["est_dt"].tolist(),
            "rel_dev_estimator_rate_dt": m["dev"].tolist(), "time_step_bias": m["bias"].tolist(),
            "time_step_bias_predicted": m["bias_pred"].tolist(),
            "core_rate_over_fp_rate": (m["core"] / m["fpk"]).tolist()}


def _control_row(name, m, config) -> Row:
    """The ensemble's escape rate against its own exact expectation at this dt (the control)."""
    dev, dev_se, Ds, core, fpk, kr = m["dev"], m["dev_se"], m["Ds"], m["core"], m["fpk"], m["kr"]
    tol = config.control_tol
    z = bonferroni_z(len(Ds))
    ok = np.abs(dev) <= tol + z * dev_se
    mid = len(Ds) // 2
    return Row(
        prediction=f"{name}: ensemble escape rate = its exact expectation at this dt (control)",
        documents_value="— (control, not a documents' claim)",
        measured=float(np.max(np.abs(dev))), uncertainty=float(np.max(dev_se)),
        error=f"max rel. dev. over {len(Ds)} D values (signed: {fmt(dev.min())} to {fmt(dev.max())})",
        verdict="holds" if np.all(ok) else "fails",
        notes=(f"tolerance {tol:.0%} + {z:.2f} SE at every D ({z:.2f}: 5% family-wise over the {len(Ds)} D "
               "values, Bonferroni; SE from the spread of the particles' counts). Exact expectation: the "
               "estimator's own quantity "
               "(transitions between the cores per unit time having visited one, from θ₁ = −1 to "
               f"t = {config.t_max}) on the FP generator, with the cores |θ₁| ≥ {config.core} moved out by "
               "β√(2D dt) for checking them every dt; what is left is O(dt) (Euler-Maruyama drift, the next "
               "monitoring term), measured within 0.6% at D = 0.25-0.5 for dt from 0.00125 to 0.01. Its t → ∞ "
               "limit, the "
               "core-to-core rate of transition path theory, is "
               f"{fmt(float(np.min(core / fpk)))}-{fmt(float(np.max(core / fpk)))} × FP λ₁/2, and Kramers "
               f"(leading order in D) is {fmt(float(kr[mid] / core[mid]))} × it at D = {Ds[mid]}."))


def _bias_row(name, m, config) -> Row:
    """The estimator's time-step bias against the one the discrete-monitoring shift predicts."""
    bias, bias_pred, tol = m["bias"], m["bias_pred"], config.control_tol
    w = 1.0 / np.maximum(m["rate_se"] / m["core"], 1e-12) ** 2
    b_meas = float(np.sum(w * bias) / np.sum(w))
    b_se = float(1.0 / math.sqrt(np.sum(w)))
    b_pred = float(np.sum(w * bias_pred) / np.sum(w))
    return Row(
        prediction=f"{name}: time-step bias of the estimator at dt = {config.dt} (vs its dt → 0 expectation)",
        documents_value="— (numerical bias, not a documents' claim)",
        measured=b_meas, uncertainty=b_se,
        error=(f"predicted by the discrete-monitoring shift β√(2D dt): {fmt(b_pred)} "
               f"(per D: {fmt(bias_pred.min())} to {fmt(bias_pred.max())})"),
        verdict="holds" if abs(b_meas - b_pred) <= tol + 2 * b_se else "fails",
        notes=("weighted mean over D of rate/(exact dt → 0 expectation) − 1 (weights 1/SE²); 'holds' when it "
               "matches the "
               f"predicted bias within {tol:.0%} + 2 SE. A smaller dt shrinks it like √dt."))


def _law_row(name, m) -> Row:
    """The documents' law: log rate linear in 1/√D with slope −S_path/√η."""
    fit_sqrt, fit_inv, stab, doc_slope = m["fit_sqrt"], m["fit_inv"], m["stab"], m["doc_slope"]
    r2s, r2i = fit_sqrt["r2"], fit_inv["r2"]
    st_s, st_i = stab["sqrt"]["ratio"], stab["inv"]["ratio"]
    slope_err = abs(fit_sqrt["slope"] - doc_slope) / abs(doc_slope)
    # documents' law: holds if its slope is the predicted −S/√η (20%) and stable over sub-ranges (15%)
    stable_s = abs(st_s - 1) <= 0.15
    if slope_err <= 0.2 and stable_s:
        vd = "holds"
    elif r2s >= 0.99:
        vd = "partly"  # a straight line in 1/√D over this range, but not the stated law
    else:
        vd = "fails"
    return Row(
        prediction=f"{name}: log rate linear in 1/√D, slope −S_path/√η (documents' law)",
        documents_value=claim("tunneling_r2"),
        measured=r2s, uncertainty=None,
        error=(f"R²(1/√D)={r2s:.4f} vs R²(1/D)={r2i:.4f}; slope {fmt(fit_sqrt['slope'])} vs predicted "
               f"{fmt(doc_slope)} ({slope_err:.0%}); low/high-D slope ratio {fmt(st_s)}"),
        verdict=vd,
        notes=("holds needs the fitted 1/√D slope within 20% of −S_path/√η and low-D/high-D slope ratio "
               "within 15% of 1; 'partly' = R² ≥ 0.99 only (R² alone cannot tell the laws apart). "
               f"Arrhenius slope ratio low/high D: {fmt(st_i)}."))


def _arrhenius_row(name, m) -> Row:
    """The exact result: log rate vs 1/D with slope −ΔL (Arrhenius/Kramers)."""
    ls, fit_inv = m["ls"], m["fit_inv"]
    barrier = float(ls.value(np.zeros(ls.dim))) - float(ls.value(m["minimum"]))
    arr_err = abs(-fit_inv["slope"] - barrier) / barrier
    return Row(
        prediction=f"{name}: log rate vs 1/D slope = −ΔL (Arrhenius/Kramers, exact)",
        documents_value="— (exact result; the documents predict a 1/√D law)",
        measured=fit_inv["slope"], uncertainty=fit_inv["slope_se"],
        error=f"ΔL = {barrier:g}; rel. err {arr_err:.1%}; low/high-D slope ratio {fmt(m['stab']['inv']['ratio'])}",
        verdict="holds" if arr_err <= 0.25 else ("partly" if arr_err <= 0.5 else "fails"),
        notes=("tolerance 25% (the Kramers prefactor and finite-D corrections bend the curve at high D); "
               f"noise-free FP λ₁/2 gives slope {fmt(m['fpfit_inv']['slope'])}."))


def _code_row(name, m) -> Row:
    """The documents' code's P (the straight line between the minima) against the measured rate."""
    pdoc_straight = m["pdoc_straight"]
    ratio_range = float(m["rate"].max() / m["rate"].min())
    p_range = float(max(pdoc_straight) / min(pdoc_straight))
    return Row(
        prediction=f"{name}: documents' code P = exp(−√(2ηΔL)|Δθ|/ħ) tracks the rate",
        documents_value=claim("tunneling_law_code"),
        measured=f"P = {fmt(pdoc_straight[0])} at every D (ΔL between the minima = 0)",
        uncertainty=None,
        error=f"measured rate varies ×{ratio_range:.1f} over D; documents' P ×{p_range:.2f}",
        verdict="fails" if (ratio_range > 2 and p_range < 1.01) else "inconclusive",
        notes="fails when the measured rate changes by more than ×2 while P stays constant.")


def _plot_landscape(axes_row, name, m, config, first: bool) -> None:
    ax_rate, ax_sqrt, ax_inv = axes_row
    Ds_a, rate, y = m["Ds_a"], m["rate"], m["y"]
    fit_sqrt, fit_inv = m["fit_sqrt"], m["fit_inv"]
    lab = f"{name} double well"
    ax_rate.errorbar(Ds_a, rate, yerr=m["rate_se"], fmt="o", label=f"{lab}: ensemble")
    ax_rate.plot(Ds_a, m["est_dt"], "-", label=f"{lab}: exact estimator rate at dt")
    ax_rate.plot(Ds_a, m["fpk"], ":", label=f"{lab}: FP λ₁/2")
    ax_rate.plot(Ds_a, m["kr"], "--", label=f"{lab}: Kramers (leading order)")
    ax_sqrt.plot(1 / np.sqrt(Ds_a), y, "o", label=f"{lab} (R²={fit_sqrt['r2']:.4f})")
    xs = np.linspace((1 / np.sqrt(Ds_a)).min(), (1 / np.sqrt(Ds_a)).max(), 20)
    ax_sqrt.plot(xs, fit_sqrt["intercept"] + fit_sqrt["slope"] * xs, "k-", lw=0.8)
    ax_inv.plot(1 / Ds_a, y, "o", label=f"{lab} (R²={fit_inv['r2']:.4f})")
    xs = np.linspace((1 / Ds_a).min(), (1 / Ds_a).max(), 20)
    ax_inv.plot(xs, fit_inv["intercept"] + fit_inv["slope"] * xs, "k-", lw=0.8)
    if first:
        ax_rate.plot(Ds_a, m["pdoc_path"], ":", label="documents' P = exp(−S_path/ħ), η=%g" % config.eta)
        ax_rate.plot(Ds_a, m["pdoc_straight"], "-.", label="documents' code P (straight line)")


def _label_axes(axes_row) -> None:
    ax_rate, ax_sqrt, ax_inv = axes_row
    ax_rate.set_yscale("log")
    ax_rate.set_xlabel("D")
    ax_rate.set_ylabel("escape rate / probability")
    ax_rate.legend(fontsize=6)
    ax_rate.set_title("escape rate vs D")
    ax_sqrt.set_xlabel("1/√D")
    ax_sqrt.set_ylabel("log rate")
    ax_sqrt.set_title("documents' law: log rate vs 1/√D")
    ax_sqrt.legend(fontsize=7)
    ax_inv.set_xlabel("1/D")
    ax_inv.set_title("Arrhenius: log rate vs 1/D")
    ax_inv.legend(fontsize=7)
