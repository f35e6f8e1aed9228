"""Experiment 1: escape ("tunneling") rate between the wells of a double well vs D.

Measured: the escape rate from Langevin ensembles (``TransitionObserver``: transitions
between the well cores ``|θ₁| > 0.5`` per unit time spent in a well) of the 1-D double well
``(θ²−1)²`` and the documents' 2-D double well ``(θ₁²−1)² + θ₂²`` at several D (reference
drift, μ = 1). Compared with the Fokker-Planck λ₁/2 (the exact two-state rate), Kramers'
rate, and the documents' ``P = exp(−S/ħ)``, ħ = √(ηD), with both barrier forms (the
reference code's straight line between the minima and the integral along the
minimum-energy path). The two laws ``log k = a − b/√D`` (documents) and ``log k = a − b/D``
(Arrhenius / Kramers) are fitted, with R², slopes, and slopes on the low-D and high-D
halves: a law that describes the data has a slope that does not drift with the range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt, group, linfit, mean_se


@dataclass(frozen=True)
class TunnelingConfig(ExperimentConfig):
    D_values_1d: tuple[float, ...] = (0.2, 0.23, 0.26, 0.3, 0.35, 0.41, 0.48, 0.56)
    D_values_2d: tuple[float, ...] = (0.2, 0.25, 0.3, 0.37, 0.45, 0.56)
    n_particles: int = 800
    t_max: float = 60.0
    dt: float = 0.005
    eta: float = 0.1  # the documents' Example 4 value, for ħ = √(ηD)
    fp_cells_1d: int = 240
    fp_cells_2d: int = 96
    core: float = 0.5
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
    """Half the Fokker-Planck spectral gap λ₁ (μ = 1): the exact well-to-well rate."""
    from hhld.fokker_planck import FokkerPlanck

    ls = _landscape(name)
    if name == "1d":
        fp = FokkerPlanck(ls, D=D, cells=cells_1d, box=[(-2.2, 2.2)], check=False)
    else:
        fp = FokkerPlanck(ls, D=D, cells=cells_2d, box=[(-2.2, 2.2), (-1.8, 1.8)], check=False)
    return float(fp.spectrum(3).rates[1]) / 2.0


def measure_escape_rate(ls, D: float, n: int, t_max: float, dt: float, seed: int, core: float = 0.5,
                        mu: float = 1.0) -> dict:
    """Ensemble escape rate (transitions / time in a well) started in the left well."""
    from hhld.dynamics import Simulation, TransitionObserver

    th0 = np.zeros((n, ls.dim))
    th0[:, 0] = -1.0
    obs = TransitionObserver(every=1, core=core)
    sim = Simulation(ls, th0, dt=dt, D=D, mu=mu, rng=np.random.default_rng(seed), observers=[obs],
                     check_every=200)
    sim.run(int(round(t_max / dt)))
    k, se = obs.rate()
    fpt = obs.first_passage
    return {"rate": k, "rate_se": se, "transitions": int(obs.count), "time_in_wells": float(obs.occupancy_time),
            "escaped_fraction": float(np.mean(np.isfinite(fpt))),
            "mean_first_passage_observed": float(np.nanmean(fpt)) if np.isfinite(fpt).any() else math.nan}


@register
class TunnelingRate(Experiment):
    name = "tunneling_rate"
    title = "Tunneling (escape) rate vs temperature D"
    config_cls = TunnelingConfig
    description = (
        "Escape rates between the wells of the 1-D and 2-D double wells measured from Langevin ensembles "
        "(μ = 1) at several D, against the Fokker-Planck λ₁/2, Kramers' rate and the documents' "
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
        out = measure_escape_rate(ls, D, config.n_particles, config.t_max, config.dt, cell.seed, config.core)
        out["fp_rate"] = fp_rate(name, D, config.fp_cells_1d, config.fp_cells_2d)
        out["kramers_rate"] = float(kramers_rate(ls, ls.minima()[0], saddle=ls.saddles()[0], D=D).rate)
        return out

    def summarize(self, config, results):
        from hhld.theory import barrier_action_path, barrier_action_straight, hbar, wkb_tunneling_probability

        rows, data = [], {}
        fig, axes = figure(3, 1, w=5.0, h=4.0)
        ax_rate, ax_sqrt, ax_inv = axes[0]
        groups = group(results, "landscape", "D")
        lands = sorted({k[0] for k in groups})
        worst_fp = 0.0
        for name in lands:
            ls = _landscape(name)
            a, b = ls.minima()
            S_straight = barrier_action_straight(ls, a, b, config.eta)
            S_path = barrier_action_path(ls, a, b, config.eta)
            Ds = sorted(D for (n, D) in groups if n == name)
            rate, rate_se, fpk, kr, pdoc_path, pdoc_straight = [], [], [], [], [], []
            for D in Ds:
                rs = groups[(name, D)]
                # pool seeds: total transitions / total time in wells (ML rate)
                cnt = sum(r["transitions"] for r in rs)
                tt = sum(r["time_in_wells"] for r in rs)
                k = cnt / tt if tt > 0 else math.nan
                rate.append(k)
                rate_se.append(k / math.sqrt(cnt) if cnt else math.nan)
                fpk.append(rs[0]["fp_rate"])
                kr.append(rs[0]["kramers_rate"])
                h = hbar(config.eta, D)
                pdoc_path.append(float(wkb_tunneling_probability(S_path, h)))
                pdoc_straight.append(float(wkb_tunneling_probability(S_straight, h)))
            Ds_a, rate, rate_se, fpk, kr = map(np.asarray, (Ds, rate, rate_se, fpk, kr))
            rel = np.abs(rate - fpk) / fpk
            worst_fp = max(worst_fp, float(np.max(rel)))
            y = np.log(rate)
            wts = (rate / rate_se) ** 2
            fit_sqrt = linfit(1 / np.sqrt(Ds_a), y, wts)
            fit_inv = linfit(1 / Ds_a, y, wts)
            half = len(Ds_a) // 2
            lo, hi = slice(0, half), slice(half, None)  # Ds sorted ascending: lo = low D
            stab = {}
            for lname, xf in (("sqrt", lambda d: 1 / np.sqrt(d)), ("inv", lambda d: 1 / d)):
                s_lo = linfit(xf(Ds_a[lo]), y[lo], wts[lo])["slope"] if half >= 2 else math.nan
                s_hi = linfit(xf(Ds_a[hi]), y[hi], wts[hi])["slope"] if len(Ds_a) - half >= 2 else math.nan
                stab[lname] = {"slope_lowD": s_lo, "slope_highD": s_hi,
                               "ratio": s_lo / s_hi if s_hi not in (0, math.nan) else math.nan}
            # documents' predicted 1/√D slope: log P = −S/√(ηD)
            doc_slope = -S_path / math.sqrt(config.eta)
            # fits of the FP rates (noise-free) for the same comparison
            fpfit_inv = linfit(1 / Ds_a, np.log(fpk))
            data[name] = {"D": Ds, "rate": rate.tolist(), "rate_se": rate_se.tolist(), "fp_rate": fpk.tolist(),
                          "kramers_rate": kr.tolist(), "P_doc_path": pdoc_path, "P_doc_straight": pdoc_straight,
                          "S_path": S_path, "S_straight": S_straight, "fit_inv_sqrt_D": fit_sqrt,
                          "fit_inv_D": fit_inv, "slope_stability": stab, "doc_slope_inv_sqrt_D": doc_slope,
                          "fp_fit_inv_D": fpfit_inv, "max_rel_dev_fp": float(np.max(rel))}
            lab = f"{name} double well"
            ax_rate.errorbar(Ds_a, rate, yerr=rate_se, fmt="o", label=f"{lab}: ensemble")
            ax_rate.plot(Ds_a, fpk, "-", label=f"{lab}: FP λ₁/2")
            ax_rate.plot(Ds_a, kr, "--", label=f"{lab}: Kramers")
            ax_sqrt.plot(1 / np.sqrt(Ds_a), y, "o", label=f"{lab} (R²={fit_sqrt['r2']:.4f})")
            xs = np.linspace((1 / np.sqrt(Ds_a)).min(), (1 / np.sqrt(Ds_a)).max(), 20)
            ax_sqrt.plot(xs, fit_sqrt["intercept"] + fit_sqrt["slope"] * xs, "k-", lw=0.8)
            ax_inv.plot(1 / Ds_a, y, "o", label=f"{lab} (R²={fit_inv['r2']:.4f})")
            xs = np.linspace((1 / Ds_a).min(), (1 / Ds_a).max(), 20)
            ax_inv.plot(xs, fit_inv["intercept"] + fit_inv["slope"] * xs, "k-", lw=0.8)
            if name == lands[0]:
                ax_rate.plot(Ds_a, pdoc_path, ":", label="documents' P = exp(−S_path/ħ), η=%g" % config.eta)
                ax_rate.plot(Ds_a, pdoc_straight, "-.", label="documents' code P (straight line)")

            # ----- rows
            tol_fp = 0.10
            v = "holds" if np.all(rel <= tol_fp + 2 * rate_se / fpk) else "fails"
            rows.append(Row(
                prediction=f"{name}: ensemble escape rate = FP λ₁/2 (control)",
                documents_value="— (control, not a documents' claim)",
                measured=float(np.max(rel)), uncertainty=float(np.max(rate_se / fpk)),
                error=f"max rel. dev. over {len(Ds)} D values",
                verdict=v, notes=f"tolerance 10% + 2 SE; D in [{Ds[0]}, {Ds[-1]}]; "
                                 f"Kramers/FP at D={Ds[len(Ds)//2]}: {kr[len(Ds)//2] / fpk[len(Ds)//2]:.3f}"))
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
            rows.append(Row(
                prediction=f"{name}: log rate linear in 1/√D, slope −S_path/√η (documents' law)",
                documents_value=claim("tunneling_r2"),
                measured=r2s, uncertainty=None,
                error=(f"R²(1/√D)={r2s:.4f} vs R²(1/D)={r2i:.4f}; slope {fmt(fit_sqrt['slope'])} vs predicted "
                       f"{fmt(doc_slope)} ({slope_err:.0%}); low/high-D slope ratio {fmt(st_s)}"),
                verdict=vd,
                notes=("holds needs the fitted 1/√D slope within 20% of −S_path/√η and low-D/high-D slope ratio "
                       "within 15% of 1; 'partly' = R² ≥ 0.99 only (R² alone cannot tell the laws apart). "
                       f"Arrhenius slope ratio low/high D: {fmt(st_i)}.")))
            barrier = float(ls.value(np.zeros(ls.dim))) - float(ls.value(a))
            arr_err = abs(-fit_inv["slope"] - barrier) / barrier
            rows.append(Row(
                prediction=f"{name}: log rate vs 1/D slope = −ΔL (Arrhenius/Kramers, exact)",
                documents_value="— (exact result; the documents predict a 1/√D law)",
                measured=fit_inv["slope"], uncertainty=fit_inv["slope_se"],
                error=f"ΔL = {barrier:g}; rel. err {arr_err:.1%}; low/high-D slope ratio {fmt(st_i)}",
                verdict="holds" if arr_err <= 0.25 else ("partly" if arr_err <= 0.5 else "fails"),
                notes=("tolerance 25% (the Kramers prefactor and finite-D corrections bend the curve at high D); "
                       f"noise-free FP λ₁/2 gives slope {fmt(fpfit_inv['slope'])}.")))
            ratio_range = float(rate.max() / rate.min())
            p_range = float(max(pdoc_straight) / min(pdoc_straight))
            rows.append(Row(
                prediction=f"{name}: documents' code P = exp(−√(2ηΔL)|Δθ|/ħ) tracks the rate",
                documents_value=claim("tunneling_law_code"),
                measured=f"P = {fmt(pdoc_straight[0])} at every D (ΔL between the minima = 0)",
                uncertainty=None,
                error=f"measured rate varies ×{ratio_range:.1f} over D; documents' P ×{p_range:.2f}",
                verdict="fails" if (ratio_range > 2 and p_range < 1.01) else "inconclusive",
                notes="fails when the measured rate changes by more than ×2 while P stays constant."))
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
        fig.tight_layout()
        notes = (f"Escape rate = transitions between the cores |θ₁| > {config.core} per unit time spent in a well, "
                 f"pooled over seeds; N = {config.n_particles}, t = {config.t_max}, dt = {config.dt}, μ = 1. "
                 f"Largest deviation from FP λ₁/2: {worst_fp:.1%}. The documents' Example 4 evaluates P between "
                 "the two minima, where the straight-line form has ΔL = 0, so P = 1 at every D and its 1/√D fit "
                 "has slope 0.")
        return ExperimentReport(rows=rows, figures={"rates": fig}, notes=notes, data=data)
