"""Experiment 6: the consolidation ratio C = |∇L|²/(D·d) at equilibrium.

On stationary Langevin ensembles (μ = 1) the exact result is E[C] = E[ΔL]/d (integration by
parts), independent of D for quadratics. Measured for Example 2's quadratic (d = 50,
λ ∈ [0.1, 10]), an isotropic quadratic of curvature 0.5, and one well of the 2-D double well,
at a low and a high D; then the regime the documents' table assigns (C > 5 classical,
C < 1 quantum, ≈ 0.5 transition) is compared across D: the documents tie the regime to the
size of ħ = √(ηD), the stationary C does not change with D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt


@dataclass(frozen=True)
class ConsolidationConfig(ExperimentConfig):
    D_values: tuple[float, ...] = (0.01, 1.0)
    n_particles: int = 1000
    dt: float = 0.01
    burn_in_t: float = 25.0
    n_snapshots: int = 8
    gap_t: float = 2.0
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def full(cls):
        # burn-in: 6 relaxation times of the slowest variance (λ_min = 0.1 on Example 2's quadratic)
        return cls(D_values=(0.001, 0.01, 0.1, 1.0), n_particles=5000, dt=0.005, burn_in_t=30.0, n_snapshots=20,
                   seeds=(0, 1, 2))

    @classmethod
    def smallest(cls):
        return cls(D_values=(0.01, 1.0), n_particles=500, burn_in_t=25.0, n_snapshots=5)


LANDSCAPES = ("example2_quadratic", "isotropic_0.5", "double_well_one_well")


def _landscape(name):
    from hhld.landscapes import DoubleWell, Quadratic, anisotropic_quadratic

    if name == "example2_quadratic":
        return anisotropic_quadratic(50)
    if name == "isotropic_0.5":
        return Quadratic(np.full(4, 0.5), box=[(-30.0, 30.0)] * 4)
    return DoubleWell(dim=2)


@register
class ConsolidationEquilibrium(Experiment):
    name = "consolidation_equilibrium"
    title = "Consolidation ratio at equilibrium"
    config_cls = ConsolidationConfig
    description = ("E[C] against E[ΔL]/d on stationary ensembles, and the regime the documents' table puts a "
                   "stationary ensemble in, at low and high D.")

    def cells(self, config, seeds):
        cells = []
        for n in LANDSCAPES:
            for D in config.D_values:
                if n == "double_well_one_well" and D > 0.1:
                    continue  # inside one well only at low D (no escapes during the run)
                cells += [Cell(self.name, {"landscape": n, "D": D}, s) for s in seeds]
        return cells

    def run_cell(self, config, cell):
        from hhld.dynamics import Simulation
        from hhld.observables import classify_regime, consolidation_ratio

        ls = _landscape(cell.key["landscape"])
        D = float(cell.key["D"])
        th0 = np.zeros((config.n_particles, ls.dim))
        if cell.key["landscape"] == "double_well_one_well":
            th0[:, 0] = -1.0
        sim = Simulation(ls, th0, dt=config.dt, D=D, integrator="leimkuhler_matthews",
                         rng=np.random.default_rng(cell.seed), check_every=200)
        sim.run(int(round(config.burn_in_t / config.dt)))
        Cs, laps = [], []
        for _ in range(config.n_snapshots):
            sim.run(int(round(config.gap_t / config.dt)))
            th, g = np.asarray(sim.state.theta), np.asarray(sim.state.grad)
            C = np.asarray(consolidation_ratio(g, D))
            Cs.append(float(C.mean()))
            laps.append(float(np.mean(np.asarray(ls.laplacian(th)))))
        Cs, laps = np.array(Cs), np.array(laps)
        mean_C = float(Cs.mean())
        return {"C": mean_C, "C_se": float(Cs.std(ddof=1) / math.sqrt(len(Cs))),
                "lap_over_d": float(laps.mean() / ls.dim), "regime": str(classify_regime(mean_C)),
                "escaped_fraction": float(np.mean(np.asarray(sim.state.theta)[:, 0] > 0))
                if cell.key["landscape"] == "double_well_one_well" else 0.0}

    def summarize(self, config, results):
        from hhld.theory import hbar

        rows, recs = [], []
        for c, r in results:
            recs.append(dict(r, landscape=c.key["landscape"], D=c.key["D"], seed=c.seed))
        dev = [abs(x["C"] - x["lap_over_d"]) / x["lap_over_d"] for x in recs]
        se = [x["C_se"] / x["lap_over_d"] for x in recs]
        i = int(np.argmax(dev))
        rows.append(Row("Stationary E[C] = E[ΔL]/(μd) (exact)", "— (exact result)", float(dev[i]), float(se[i]),
                        f"max rel. dev. over {len(recs)} ensembles (worst: {recs[i]['landscape']}, D={recs[i]['D']})",
                        "holds" if all(d <= 0.03 + 2 * s for d, s in zip(dev, se)) else "fails",
                        "tolerance 3% + 2 SE; μ = 1, Leimkuhler-Matthews"))
        # regimes vs D
        changes, desc = 0, []
        for n in LANDSCAPES:
            xs = sorted([x for x in recs if x["landscape"] == n], key=lambda x: x["D"])
            if not xs:
                continue
            regs = [x["regime"] for x in xs]
            desc.append(f"{n}: " + ", ".join(f"D={x['D']:g}: C={fmt(x['C'])} ({x['regime']})" for x in xs))
            if len(set(regs)) > 1:
                changes += 1
        lo = min(config.D_values)
        hi = max(config.D_values)
        q = [x for x in recs if x["landscape"] == "example2_quadratic"]
        ratio = (max(x["C"] for x in q) / min(x["C"] for x in q)) if q else math.nan
        rows.append(Row("The regime follows ħ = √(ηD): large D → quantum (C < 1), small D → classical (C > 5)",
                        claim("consolidation_regimes"), ratio, None,
                        f"Example 2 quadratic: C(D={hi:g}) / C(D={lo:g}) = {fmt(ratio)} while ħ changes "
                        f"×{float(hbar(1.0, hi) / hbar(1.0, lo)):.0f}; regime changed with D on {changes} of "
                        f"{len(desc)} landscapes",
                        "holds" if changes == len(desc) else ("partly" if changes else "fails"),
                        "; ".join(desc) + ". At equilibrium C is set by the curvature (E[ΔL]/d), not by D."))
        fig, axes = figure(1, 1, w=6.0, h=4.2)
        ax = axes[0][0]
        for n, mk in zip(LANDSCAPES, "osd"):
            xs = sorted([x for x in recs if x["landscape"] == n], key=lambda x: x["D"])
            ax.errorbar([x["D"] for x in xs], [x["C"] for x in xs], yerr=[x["C_se"] for x in xs], fmt=mk + "-",
                        label=f"{n}: measured E[C]")
            ax.plot([x["D"] for x in xs], [x["lap_over_d"] for x in xs], "k:", lw=1)
        ax.axhline(5, color="b", ls="--", lw=0.8, label="C = 5 (documents: classical above)")
        ax.axhline(1, color="r", ls="--", lw=0.8, label="C = 1 (documents: quantum below)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("D")
        ax.set_ylabel("E[C] (dotted: E[ΔL]/d)")
        ax.set_title("stationary consolidation ratio")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return ExperimentReport(rows=rows, figures={"consolidation": fig}, data={"ensembles": recs})
