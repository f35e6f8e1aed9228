"""Experiment 10a: escape rate vs dimension (Takeaway 11).

The family ``DoubleWell(dim=d)``: ``(θ₁²−1)² + Σ_{i≥2} θ_i²``, the same barrier in every d.
The escape rate is measured from ensembles at one D for several d and compared with
Kramers' rate (exact: added stable directions change only the prefactor
√(det H_min/|det H_saddle|), here 1) and with the documents' Γ ∝ ω·exp(−S/ħ), S ∝ √d, whose
heading says the rate increases with dimension while the formula decreases with d.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt, linfit
from .tunneling_rate import measure_escape_rate


@dataclass(frozen=True)
class DimensionConfig(ExperimentConfig):
    dims: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    D: float = 0.25
    n_particles: int = 600
    t_max: float = 60.0
    dt: float = 0.005
    eta: float = 0.1  # documents' Example 1, for ħ = √(ηD)
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def full(cls):
        return cls(dims=(1, 2, 4, 8, 16, 32, 64, 128), n_particles=4000, t_max=200.0, dt=0.0025, seeds=(0, 1, 2))

    @classmethod
    def smallest(cls):
        return cls(dims=(1, 8), n_particles=600, t_max=60.0)


@register
class Dimension(Experiment):
    name = "dimension"
    title = "Escape rate vs dimension (Takeaway 11)"
    config_cls = DimensionConfig
    description = ("Escape rate of d-dimensional double wells (same barrier, stable transverse directions) at fixed "
                   "D against Kramers and the documents' Γ ∝ exp(−S/ħ), S ∝ √d.")

    def cells(self, config, seeds):
        return [Cell(self.name, {"d": int(d)}, s) for d in config.dims for s in seeds]

    def run_cell(self, config, cell):
        from hhld.landscapes import DoubleWell
        from hhld.theory import kramers_rate

        ls = DoubleWell(dim=int(cell.key["d"]))
        out = measure_escape_rate(ls, config.D, config.n_particles, config.t_max, config.dt, cell.seed)
        out["kramers_rate"] = float(kramers_rate(ls, ls.minima()[0], saddle=ls.saddles()[0], D=config.D).rate)
        return out

    def summarize(self, config, results):
        from hhld.landscapes import DoubleWell
        from hhld.theory import barrier_action_path, hbar, tunneling_rate_dimension

        dims = sorted({int(c.key["d"]) for c, _ in results})
        rate, se, kr = [], [], []
        for d in dims:
            rs = [r for c, r in results if int(c.key["d"]) == d]
            cnt = sum(r["transitions"] for r in rs)
            tt = sum(r["time_in_wells"] for r in rs)
            k = cnt / tt
            rate.append(k)
            se.append(k / math.sqrt(cnt) if cnt else math.nan)
            kr.append(rs[0]["kramers_rate"])
        rate, se, kr, dims_a = map(np.asarray, (rate, se, kr, dims))
        fit = linfit(np.log(dims_a), np.log(rate), (rate / se) ** 2)
        slope, sse = fit["slope"], fit["slope_se"]
        ls1 = DoubleWell(dim=1)
        S0 = barrier_action_path(ls1, ls1.minima()[0], ls1.minima()[1], config.eta)
        h = float(hbar(config.eta, config.D))
        doc = np.asarray(tunneling_rate_dimension(dims_a, S0, h))
        doc = doc / doc[0] * rate[0]  # Γ ∝ ...: normalised to the measured d = 1 rate
        ratio_hi_lo = float(rate[-1] / rate[0])
        ratio_se = ratio_hi_lo * math.sqrt((se[-1] / rate[-1]) ** 2 + (se[0] / rate[0]) ** 2)
        rows = []
        increases = ratio_hi_lo - 1 > 2 * ratio_se
        rows.append(Row("Tunneling rate increases with dimension", claim("dimension"), ratio_hi_lo, ratio_se,
                        f"rate(d={dims[-1]}) / rate(d={dims[0]}); log-log slope {fmt(slope)} ± {fmt(sse)}",
                        "holds" if increases else ("fails" if abs(ratio_hi_lo - 1) <= 2 * ratio_se + 0.1 or
                                                   ratio_hi_lo < 1 else "inconclusive"),
                        f"'holds' needs the ratio above 1 by more than 2 SE. D = {config.D}, μ = 1; the family keeps "
                        "the barrier and adds stable directions."))
        doc_ratio = float(doc[-1] / doc[0])
        rows.append(Row("Γ ∝ exp(−S/ħ) with S ∝ √d (documents' formula)", claim("dimension"), ratio_hi_lo, ratio_se,
                        f"documents' formula predicts rate(d={dims[-1]})/rate(d={dims[0]}) = {fmt(doc_ratio)} "
                        f"(S₀ = S_path = {fmt(S0)}, ħ = {fmt(h)})",
                        "holds" if abs(ratio_hi_lo - doc_ratio) <= max(0.2 * doc_ratio, 2 * ratio_se) else "fails",
                        "tolerance 20% or 2 SE on the ratio."))
        dev = float(np.max(np.abs(rate - kr) / kr))
        rows.append(Row("Rate = Kramers, independent of d for this family (exact)", "— (exact result)", dev,
                        float(np.max(se / kr)), f"max rel. dev. from Kramers over d = {dims}",
                        "holds" if dev <= 0.15 + 2 * float(np.max(se / kr)) else "fails",
                        "tolerance 15% + 2 SE (Kramers is leading order in D; at D = 0.25 it is ~10% above FP λ₁/2)."))
        fig, axes = figure(1, 1, w=6.0, h=4.2)
        ax = axes[0][0]
        ax.errorbar(dims_a, rate, yerr=se, fmt="o-", label="measured escape rate")
        ax.plot(dims_a, kr, "k--", label="Kramers")
        ax.plot(dims_a, doc, "r:", label="documents: ∝ exp(−S₀√d/ħ) (normalised at d = 1)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("dimension d")
        ax.set_ylabel("escape rate")
        ax.set_title(f"escape rate vs dimension, D = {config.D}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return ExperimentReport(rows=rows, figures={"rate_vs_dimension": fig},
                                data={"dims": dims, "rate": rate.tolist(), "rate_se": se.tolist(),
                                      "kramers_rate": kr.tolist(), "documents_normalised": doc.tolist(),
                                      "loglog_fit": fit})
