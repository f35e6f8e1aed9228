"""Experiment 3: Theorem 2 (energy-entropy bound) against the free-energy identity.

On Fokker-Planck grids (1-D quadratic and double well, several D, μ = 1), for a family of
densities ρ (Gaussians of several centres and widths, and snapshots of the FP evolution
from them), measure ΔE = E_ρ[L] − E_ρ*[L], KL(ρ‖ρ*), ΔF = F[ρ] − F[ρ*] (F = E − (D/μ)S).
Exact: ΔF = (D/μ)·KL for every ρ. The documents' Theorem 2 states ΔE ≥ (D/2η)·KL; a density
narrower than ρ* at the minimum has ΔE < 0 < KL.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt


@dataclass(frozen=True)
class EnergyEntropyConfig(ExperimentConfig):
    D_values: tuple[float, ...] = (0.05, 0.2, 0.5)
    eta: float = 0.1  # documents' Example 1
    cells_1d: int = 600
    centres: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.7)
    widths: tuple[float, ...] = (0.05, 0.15, 0.4, 0.8)
    evolve_times: tuple[float, ...] = (0.05, 0.2, 1.0)
    seeds: tuple[int, ...] = (0,)

    @classmethod
    def full(cls):
        return cls(D_values=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0), cells_1d=1500,
                   centres=(-1.2, -1.0, -0.5, 0.0, 0.3, 0.7, 1.0), widths=(0.03, 0.08, 0.15, 0.3, 0.5, 0.8, 1.2))

    @classmethod
    def smallest(cls):
        return cls(D_values=(0.2,), centres=(-1.0, 0.0), widths=(0.1, 0.5), evolve_times=(0.2,))


def _landscape(name):
    from hhld.landscapes import DoubleWell, Quadratic

    return Quadratic(np.array([1.0]), box=[(-4.0, 4.0)]) if name == "quadratic" else DoubleWell(dim=1)


@register
class EnergyEntropy(Experiment):
    name = "energy_entropy"
    title = "Energy-entropy bound (Theorem 2) vs the free-energy identity"
    config_cls = EnergyEntropyConfig
    description = ("ΔE, KL and ΔF for Gaussian and evolved densities on FP grids of a quadratic and a double well: "
                   "the exact identity F[ρ] − F[ρ*] = (D/μ)·KL against Theorem 2's ΔE ≥ (D/2η)·KL.")

    def cells(self, config, seeds):
        # deterministic (grid computations): one seed
        return [Cell(self.name, {"landscape": n, "D": D}, int(seeds[0]))
                for n in ("quadratic", "double_well") for D in config.D_values]

    def run_cell(self, config, cell):
        from hhld.fokker_planck import FokkerPlanck
        from hhld.theory import free_energy_identity, theorem2_bound

        ls = _landscape(cell.key["landscape"])
        D = float(cell.key["D"])
        box = [(-4.0, 4.0)] if cell.key["landscape"] == "quadratic" else [(-2.5, 2.5)]
        fp = FokkerPlanck(ls, D=D, cells=config.cells_1d, box=box, check=False)
        star = fp.gibbs()
        E_star, F_star = fp.grid.integrate(fp.L * star), fp.free_energy(star)
        recs = []
        for c in config.centres:
            for w in config.widths:
                rho0 = fp.gaussian([c], w)
                dens = [(0.0, rho0)] + list(zip(config.evolve_times, fp.evolve(rho0, list(config.evolve_times))))
                for t, rho in dens:
                    rho = np.clip(rho, 0, None)
                    rho = rho / fp.grid.integrate(rho)
                    kl = fp.kl(rho)
                    dE = fp.grid.integrate(fp.L * rho) - E_star
                    dF = fp.free_energy(rho) - F_star
                    recs.append({"centre": c, "width": w, "t": t, "kl": kl, "dE": dE, "dF": dF,
                                 "identity": float(free_energy_identity(D, kl)),
                                 "thm2": float(theorem2_bound(D, config.eta, kl))})
        return {"records": recs}

    def summarize(self, config, results):
        rows = []
        allrec = []
        for c, r in results:
            for x in r["records"]:
                allrec.append(dict(x, landscape=c.key["landscape"], D=c.key["D"]))
        kl = np.array([x["kl"] for x in allrec])
        dF = np.array([x["dF"] for x in allrec])
        ident = np.array([x["identity"] for x in allrec])
        dE = np.array([x["dE"] for x in allrec])
        thm2 = np.array([x["thm2"] for x in allrec])
        m = kl > 1e-10
        id_err = float(np.max(np.abs(dF[m] - ident[m]) / ident[m]))
        rows.append(Row("F[ρ] − F[ρ*] = (D/μ)·KL(ρ‖ρ*) (exact identity)", "— (exact result)", id_err, None,
                        f"max rel. err over {int(m.sum())} densities", "holds" if id_err <= 1e-6 else "fails",
                        "tolerance 1e-6 (grid arithmetic); μ = 1"))
        viol = (dE < thm2 - 1e-12) & m
        frac_ok = 1.0 - float(viol.sum()) / float(m.sum())
        worst = int(np.argmin(np.where(m, dE - thm2, np.inf)))
        w = allrec[worst]
        rows.append(Row("E[ρ] − E[ρ*] ≥ (D/2η)·KL(ρ‖ρ*) (Theorem 2)", claim("theorem2"), frac_ok, None,
                        f"fraction of densities satisfying it; worst: {w['landscape']}, D={w['D']}, centre {w['centre']}, "
                        f"width {w['width']}, t={w['t']}: ΔE = {fmt(w['dE'])} vs bound {fmt(w['thm2'])}",
                        "holds" if frac_ok == 1.0 else ("partly" if frac_ok >= 0.5 else "fails"),
                        f"η = {config.eta}; any violation beyond 1e-12 counts. Densities narrower than ρ* have "
                        "ΔE < 0 while KL > 0: the energy alone is not bounded by KL; the free energy is."))
        neg = float(np.mean(dE[m] < 0))
        fig, axes = figure(2, 1, w=5.0, h=4.0)
        ax, ax2 = axes[0]
        for name, mk in (("quadratic", "o"), ("double_well", "s")):
            sel = np.array([x["landscape"] == name for x in allrec]) & m
            ax.loglog(ident[sel], dF[sel], mk, ms=3, alpha=0.6, label=name)
            ax2.plot(thm2[sel], dE[sel], mk, ms=3, alpha=0.6, label=name)
        lim = [ident[m].min(), ident[m].max()]
        ax.plot(lim, lim, "k-", lw=0.8, label="ΔF = (D/μ)KL")
        ax.set_xlabel("(D/μ)·KL")
        ax.set_ylabel("F[ρ] − F[ρ*]")
        ax.set_title("free-energy identity")
        ax.legend(fontsize=7)
        lim2 = [0, thm2[m].max()]
        ax2.plot(lim2, lim2, "k-", lw=0.8, label="ΔE = (D/2η)KL")
        ax2.set_xscale("symlog", linthresh=1e-3)
        ax2.set_yscale("symlog", linthresh=1e-3)
        ax2.set_xlabel("(D/2η)·KL (Theorem 2 bound)")
        ax2.set_ylabel("E[ρ] − E[ρ*]")
        ax2.set_title("Theorem 2: points below the line violate it")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        return ExperimentReport(rows=rows, figures={"free_energy": fig},
                                notes=f"{int(m.sum())} densities; {neg:.0%} have E[ρ] < E[ρ*].",
                                data={"n_densities": int(m.sum()), "fraction_negative_dE": neg,
                                      "identity_max_rel_err": id_err, "theorem2_fraction_ok": frac_ok})
