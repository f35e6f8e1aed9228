"""Experiment 2: the uncertainty relation (Theorem 1 and its variants).

Measured: the per-coordinate product Δθ_i·Δ(∂_iL) and the Stein covariance Cov(θ_i, ∂_iL)
on stationary Langevin ensembles (decoupled quadratic, coupled quadratic, the 2-D double
well with both wells populated, inside one well of it), and along the dynamics from a point
start (Ornstein-Uhlenbeck). Compared with the exact stationary result Cov = D/μ (Stein) and
Δθ_i·Δ∂_iL ≥ D/μ, and with the documents' bounds √(η·lr)/2, η·lr/4, η/2 and ħ/2 (ħ = √(ηD),
η = 1/lr). Also the documents' Example 3 procedure: i.i.d. Gaussian samples with std √ħ
(not an ensemble of the dynamics), whose product measures curvature × ħ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..base import Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim, register
from ._common import figure, fmt

STATES = ("quadratic", "coupled_quadratic", "double_well", "one_well")


@dataclass(frozen=True)
class UncertaintyConfig(ExperimentConfig):
    D_values: tuple[float, ...] = (0.01, 0.1)
    n_particles: int = 4000
    dt: float = 0.01
    burn_in_t: float = 15.0
    n_snapshots: int = 20
    snapshot_gap_t: float = 1.0
    eta: float = 0.1  # the documents' Example 1 value; lr = 1/eta
    one_well_D: float = 0.05
    dyn_times: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)
    example3_samples: int = 1000
    seeds: tuple[int, ...] = (0,)


    @classmethod
    def full(cls):
        return cls(D_values=(0.001, 0.01, 0.1, 1.0), n_particles=20000, dt=0.005, n_snapshots=60,
                   seeds=(0, 1, 2))

    @classmethod
    def smallest(cls):
        return cls(D_values=(0.1,), n_particles=4000, n_snapshots=12)


def _landscape(state: str):
    from hhld.landscapes import DoubleWell, Quadratic

    if state == "quadratic":
        return Quadratic(np.array([0.5, 1.0, 2.0, 4.0]))
    if state == "coupled_quadratic":
        return Quadratic(np.array([[2.0, 0.9], [0.9, 1.0]]))
    return DoubleWell(dim=2)


def stationary_products(ls, D, n, dt, burn_t, n_snap, gap_t, rng, start) -> dict:
    """Per-coordinate Δθ·Δ∂L and Cov(θ,∂L) over particles, averaged over time snapshots (SE over snapshots)."""
    from hhld.dynamics import Simulation

    sim = Simulation(ls, start, dt=dt, D=D, integrator="leimkuhler_matthews", rng=rng, check_every=200)
    sim.run(int(round(burn_t / dt)))
    gap = max(1, int(round(gap_t / dt)))
    prods, covs = [], []
    for _ in range(n_snap):
        sim.run(gap)
        th, g = np.asarray(sim.state.theta), np.asarray(sim.state.grad)
        thc, gc = th - th.mean(0), g - g.mean(0)
        prods.append(np.sqrt((thc ** 2).mean(0) * (gc ** 2).mean(0)))
        covs.append((thc * gc).mean(0))
    prods, covs = np.array(prods), np.array(covs)
    k = prods.shape[0]
    return {"product": prods.mean(0).tolist(), "product_se": (prods.std(0, ddof=1) / math.sqrt(k)).tolist(),
            "cov": covs.mean(0).tolist(), "cov_se": (covs.std(0, ddof=1) / math.sqrt(k)).tolist()}


@register
class Uncertainty(Experiment):
    name = "uncertainty"
    title = "Uncertainty relation (Theorem 1)"
    config_cls = UncertaintyConfig
    description = (
        "Δθ_i·Δ∂_iL on stationary ensembles and along the dynamics from a point start, against Stein's "
        "Cov(θ_i, ∂_iL) = D/μ and the documents' bounds √(η·lr)/2, η·lr/4, η/2, ħ/2; and the documents' "
        "Example 3 procedure (i.i.d. Gaussian samples with std √ħ).")

    def cells(self, config, seeds):
        cells = [Cell(self.name, {"state": s, "D": D}, seed)
                 for s in ("quadratic", "coupled_quadratic", "double_well") for D in config.D_values for seed in seeds]
        cells += [Cell(self.name, {"state": "one_well", "D": config.one_well_D}, seed) for seed in seeds]
        cells += [Cell(self.name, {"state": "dynamics", "D": config.D_values[-1]}, seed) for seed in seeds]
        cells += [Cell(self.name, {"state": "example3", "D": 0.05}, seed) for seed in seeds]
        return cells

    def run_cell(self, config, cell):
        st, D = cell.key["state"], float(cell.key["D"])
        rng = np.random.default_rng(cell.seed)
        n = config.n_particles
        if st in ("quadratic", "coupled_quadratic"):
            ls = _landscape(st)
            start = np.zeros((n, ls.dim))
        elif st == "double_well":
            ls = _landscape(st)
            start = np.zeros((n, 2))
            start[:, 0] = np.where(np.arange(n) < n // 2, -1.0, 1.0)  # both wells, Gibbs weights by symmetry
        elif st == "one_well":
            ls = _landscape(st)
            start = np.zeros((n, 2))
            start[:, 0] = -1.0
        elif st == "dynamics":
            return self._dynamics(config, D, rng)
        elif st == "example3":
            return self._example3(config, D, rng)
        else:
            raise ValueError(st)
        out = stationary_products(ls, D, n, config.dt, config.burn_in_t, config.n_snapshots,
                                  config.snapshot_gap_t, rng, start)
        if st == "one_well":
            out["escaped_fraction"] = float(np.mean(np.asarray(start)[:, 0] > 0))
        return out

    def _dynamics(self, config, D, rng):
        """OU L = κθ²/2 (κ = 1, 2 coordinates) from the point θ = 1: products along the way vs exact."""
        from hhld.dynamics import Simulation
        from hhld.landscapes import Quadratic
        from hhld.theory import ou_variance

        kappa = 1.0
        ls = Quadratic(np.array([kappa, kappa]))
        sim = Simulation(ls, np.ones((config.n_particles, 2)), dt=config.dt * 0.2, D=D,
                         integrator="euler_maruyama", rng=rng, check_every=200)
        prods, exact = [], []
        t_prev = 0.0
        for t in config.dyn_times:
            sim.run(int(round((t - t_prev) / sim.dt)))
            t_prev = t
            th, g = np.asarray(sim.state.theta), np.asarray(sim.state.grad)
            prods.append(float(np.mean(th.std(0) * g.std(0))))
            exact.append(float(kappa * ou_variance(t, kappa, D)))  # Δθ·Δ(κθ) = κ·Var θ
        return {"times": list(config.dyn_times), "product": prods, "exact": exact}

    def _example3(self, config, D, rng):
        """The documents' Example 3: θ ~ N(0, ħ) i.i.d. (std √ħ), products of the sample std's."""
        from hhld.landscapes import DoubleWell, anisotropic_quadratic
        from hhld.theory import hbar

        h = float(hbar(config.eta, D))
        out = {"hbar": h}
        for name, ls in (("double_well", DoubleWell(dim=2)), ("quadratic50", anisotropic_quadratic(50))):
            th = rng.standard_normal((config.example3_samples, ls.dim)) * math.sqrt(h)
            g = np.asarray(ls.grad(th))
            prod = np.sqrt(th.var(0) * g.var(0))
            curv = np.array([np.mean(np.asarray(ls.hessian(th))[:, i, i]) for i in range(ls.dim)]) \
                if ls.dim <= 2 else np.asarray(ls.eigenvalues())
            out[name] = {"product": prod.tolist(), "curvature": curv.tolist()}
        return out

    def summarize(self, config, results):
        stat = [(c, r) for c, r in results if c.key["state"] in STATES]
        dyn = [r for c, r in results if c.key["state"] == "dynamics"]
        ex3 = [r for c, r in results if c.key["state"] == "example3"]
        st = _stationary_measures(stat, config)
        rows = (_stein_rows(st, stat, config) + _bound_rows(st, dyn, config) + _one_well_rows(stat, config)
                + _dynamics_rows(dyn, config) + _example3_rows(ex3))
        data = {"stationary": st["data"]}
        if ex3:
            data["example3"] = ex3[0]
        if dyn:
            data["dynamics"] = dyn[0]
        return ExperimentReport(rows=rows, figures={"products": _figure(stat, dyn, config)}, data=data,
                                notes="μ = 1 (reference drift). Products are per coordinate, over particles, "
                                      "averaged over time snapshots.")


# ------------------------------------------------------------------ summarize: measures, rows, figure
def _bounds(eta: float, lr: float, D: float | None = None) -> dict:
    """The documents' lower bounds on Δθ·Δ∇L (``hbar``: at diffusion ``D``)."""
    from hhld.theory import (hbar, uncertainty_bound_hbar, uncertainty_bound_principle, uncertainty_bound_takeaway,
                             uncertainty_bound_theorem1)

    out = {"principle": float(uncertainty_bound_principle(eta, lr)),
           "theorem1": float(uncertainty_bound_theorem1(eta, lr)),
           "takeaway": float(uncertainty_bound_takeaway(eta))}
    if D is not None:
        out["hbar"] = float(uncertainty_bound_hbar(hbar(eta, D)))
    return out


def _stationary_measures(stat, config) -> dict:
    """Over the stationary ensembles: the worst Stein deviation, product/D, and product/bound per bound."""
    eta, lr = config.eta, 1.0 / config.eta
    worst_cov, worst_cov_se = 0.0, 0.0
    ratios = {"principle": [], "theorem1": [], "takeaway": [], "hbar": []}
    min_over_D, data = [], []
    for c, r in stat:
        D = float(c.key["D"])
        cov, cse, prod, pse = map(np.asarray, (r["cov"], r["cov_se"], r["product"], r["product_se"]))
        dev = np.abs(cov - D) / D
        i = int(np.argmax(dev))
        if dev[i] > worst_cov:
            worst_cov, worst_cov_se = float(dev[i]), float(cse[i] / D)
        min_over_D.append(float(np.min(prod / D)))
        pm = float(np.min(prod))
        for key, bound in _bounds(eta, lr, D).items():
            ratios[key].append(pm / bound)
        data.append({"state": c.key["state"], "D": D, "seed": c.seed, "product": prod.tolist(),
                     "product_se": pse.tolist(), "cov": cov.tolist()})
    return {"worst_cov": worst_cov, "worst_cov_se": worst_cov_se, "ratios": ratios, "min_over_D": min_over_D,
            "data": data}


def _stein_rows(st, stat, config) -> list[Row]:
    """The exact results: Stein's Cov = D/μ, equality on the decoupled quadratic, product ≥ D/μ."""
    rows = [Row("Stationary Cov(θ_i, ∂_iL) = D/μ (Stein, exact)", "— (exact result)",
                st["worst_cov"], st["worst_cov_se"], f"max rel. dev. from D over {len(stat)} ensembles × coordinates",
                "holds" if st["worst_cov"] <= 0.05 + 2 * st["worst_cov_se"] else "fails",
                f"tolerance 5% + 2 SE (SE over time snapshots); μ = 1, Leimkuhler-Matthews, dt = {config.dt}")]
    q = [(c, r) for c, r in stat if c.key["state"] == "quadratic"]
    qdev = max(float(np.max(np.abs(np.asarray(r["product"]) - c.key["D"]) / c.key["D"])) for c, r in q)
    qse = max(float(np.max(np.asarray(r["product_se"]) / c.key["D"])) for c, r in q)
    rows.append(Row("Decoupled quadratic: Δθ_i·Δ∂_iL = D/μ (equality)", "— (exact result)",
                    qdev, qse, "max rel. dev. from D", "holds" if qdev <= 0.03 else "fails",
                    "tolerance 3%"))
    mn = min(st["min_over_D"])
    rows.append(Row("Stationary Δθ_i·Δ∂_iL ≥ D/μ (Cauchy-Schwarz on Stein)", "— (exact result)",
                    mn, None, "min over ensembles of product/D", "holds" if mn >= 0.97 else "fails",
                    "tolerance 3% below 1"))
    return rows


def _bound_rows(st, dyn, config) -> list[Row]:
    """The documents' bounds (stated for any state ρ) on the stationary ensembles."""
    eta, ratios = config.eta, st["ratios"]
    dyn_min = min(min(r["product"]) for r in dyn) if dyn else math.nan
    rows = []
    for key, cid, label in (("principle", "uncertainty_main", "√(η·lr)/2"),
                            ("theorem1", "uncertainty_thm1", "η·lr/4"),
                            ("takeaway", "uncertainty_takeaway", "η/2"),
                            ("hbar", "uncertainty_hbar", "ħ/2")):
        rmin = float(min(ratios[key]))
        n_ok = int(sum(x >= 0.97 for x in ratios[key]))
        # a bound stated for every state: one ensemble far below it refutes it
        verdict = "holds" if rmin >= 0.97 else ("partly" if rmin >= 0.5 else "fails")
        rows.append(Row(f"Δθ·Δ∇L ≥ {label} on stationary ensembles (documents)", claim(cid), rmin, None,
                        f"min product / bound over {len(ratios[key])} ensembles (D in {list(config.D_values)}); "
                        f"max {fmt(max(ratios[key]))}; satisfied by {n_ok}/{len(ratios[key])}",
                        verdict, f"η = {eta} (Example 1), lr = 1/η; 'holds' if every ensemble ≥ 0.97 × bound, "
                                 "'partly' if none is below 0.5 × bound, else 'fails' (the documents state the "
                                 "bound for any state). Along the dynamics from a point start the product starts "
                                 f"at {fmt(dyn_min)} (any bound > 0 fails there)."))
    return rows


def _one_well_rows(stat, config) -> list[Row]:
    """Inside one well: the documents' coherent-state equality Δθ·Δ∇L = ħ/2."""
    ow = [(c, r) for c, r in stat if c.key["state"] == "one_well"]
    if not ow:
        return []
    c, r = ow[0]
    D = float(c.key["D"])
    pr = float(np.mean(r["product"]))
    ratio = pr / _bounds(config.eta, 1.0 / config.eta, D)["hbar"]
    return [Row("Inside one well (a 'trained model'): Δθ·Δ∇L = ħ/2 (coherent state)",
                claim("coherent_equality"), ratio, None,
                f"product/(ħ/2) at D = {D}; product/D = {pr / D:.3f}",
                "holds" if abs(ratio - 1) <= 0.1 else "fails",
                "tolerance 10%; the exact in-well value is ≈ D (Stein), which is not ħ/2 = √(ηD)/2.")]


def _dynamics_rows(dyn, config) -> list[Row]:
    """Along the dynamics from a point start: the exact OU curve."""
    if not dyn:
        return []
    r = dyn[0]
    p, ex = np.asarray(r["product"]), np.asarray(r["exact"])
    m = ex > 0
    dev = float(np.max(np.abs(p[m] - ex[m]) / ex[m]))
    return [Row("From a point start: Δθ·Δ∇L(t) = κ·Var θ(t) (exact OU)", "— (exact result)",
                dev, None, "max rel. dev. from the exact OU curve", "holds" if dev <= 0.08 else "fails",
                f"tolerance 8% (sampling with N = {config.n_particles}); the product starts at 0 and rises to D: "
                "no state-independent lower bound holds for every ρ")]


def _example3_rows(ex3) -> list[Row]:
    """The documents' Example 3 (Gaussian samples with std √ħ)."""
    if not ex3:
        return []
    r = ex3[0]
    h = r["hbar"]
    dw = np.asarray(r["double_well"]["product"]) / (h / 2)
    q50 = np.asarray(r["quadratic50"]["product"]) / (h / 2)
    curv50 = np.asarray(r["quadratic50"]["curvature"])
    frac = float(np.mean(q50 >= 0.95))
    # what it measures: product ≈ |curvature|·ħ
    meas_dev = float(np.max(np.abs(np.asarray(r["quadratic50"]["product"]) - curv50 * h) / (curv50 * h)))
    return [Row("Example 3: Gaussian samples with std √ħ satisfy Δθ·Δ∇L ≥ ħ/2",
                claim("uncertainty_hbar"), frac, None,
                f"fraction of coordinates passing (5% tolerance, as in Example 3) on Example 2's quadratic "
                f"(λ in [0.1, 10]); documents' double well: product/(ħ/2) = {[round(float(x), 2) for x in dw]}",
                "holds" if frac == 1.0 else ("partly" if frac > 0 else "fails"),
                f"the procedure measures curvature × ħ (max rel. dev. of product from λ_i·ħ: "
                f"{meas_dev:.1%}); it passes iff the curvature ≥ 1/2, independent of any dynamics.")]


def _figure(stat, dyn, config):
    from hhld.theory import hbar, uncertainty_bound_hbar

    eta, lr = config.eta, 1.0 / config.eta
    b = _bounds(eta, lr)
    fig, axes = figure(2, 1, w=5.2, h=4.0)
    ax, ax2 = axes[0]
    for s, mk in zip(STATES, "osd^"):
        pts = [(float(c.key["D"]), np.asarray(r["product"])) for c, r in stat if c.key["state"] == s]
        for D, p in pts:
            ax.plot([D] * len(p), p, mk, alpha=0.7, label=s if D == pts[0][0] else None)
    Ds = np.logspace(np.log10(min(config.D_values + (config.one_well_D,))) - 0.3,
                     np.log10(max(config.D_values)) + 0.3, 50)
    ax.plot(Ds, Ds, "k-", label="D (Stein)")
    ax.plot(Ds, [uncertainty_bound_hbar(hbar(eta, d)) for d in Ds], "r--", label="ħ/2 (documents)")
    ax.axhline(b["principle"], color="m", ls=":", label="√(η·lr)/2")
    ax.axhline(b["theorem1"], color="c", ls=":", label="η·lr/4 (Thm 1)")
    ax.axhline(b["takeaway"], color="g", ls=":", label="η/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("D")
    ax.set_ylabel("Δθ_i·Δ∂_iL")
    ax.set_title("stationary ensembles")
    ax.legend(fontsize=7)
    if dyn:
        r = dyn[0]
        ax2.plot(r["times"], r["product"], "o", label="ensemble")
        ax2.plot(r["times"], r["exact"], "k-", label="exact OU κ·Var θ(t)")
        D = float(config.D_values[-1])
        ax2.axhline(float(uncertainty_bound_hbar(hbar(eta, D))), color="r", ls="--", label="ħ/2")
        ax2.set_xlabel("t")
        ax2.set_ylabel("Δθ·Δ∇L")
        ax2.set_title(f"from a point start, D = {D}")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig
