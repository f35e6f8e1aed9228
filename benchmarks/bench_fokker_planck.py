"""hhld.fokker_planck vs the PyPI package ``fplanck`` on the same problem, in one process.

Problem: the 2-D double well L = (th1^2 - 1)^2 + th2^2 on [-2, 2]^2, D = 0.05, mu = 1
(Gibbs exp(-L/D)), grids 128^2 and 256^2 (cell centres = fplanck's grid points):

* steady state: fplanck ``steady_state()`` (shift-invert ``eigs``) vs hhld
  ``stationary("solve")`` (sparse null-vector solve) and ``gibbs()`` (closed form, which
  is the exact discrete stationary state of the SG scheme);
* evolution to t = 5 from a Gaussian at (0.5, 0.5) (std 0.1): fplanck ``propagate``
  (``expm_multiply``) vs hhld ``evolve`` (contour integral).

Physics matching: fplanck has D = k T / drag, mobility 1/drag and stationary state
exp(-U / kT); with U = L, drag = 1/mu and k T = D/mu both solve
d rho/dt = mu div(rho grad L) + D lap rho. fplanck's densities are per-cell
probabilities (sum 1); they are divided by the cell area to compare densities.

Reported: wall times (setup = building the operator, included in totals), L1 error
against the normalised Gibbs density, and the speed ratio. At t = 5 neither solution is
near Gibbs (the inter-well time is ~1/lambda_1 ~ 1e8 at D = 0.05), so for the evolution
the L1 distance between the two solvers' answers is printed as well, and each solver's
own accuracy is checked against a tighter run of itself on the same grid.

Run: ``.venv/bin/python benchmarks/bench_fokker_planck.py [--sizes 128 256] [--skip-fplanck-evolve-above N]``
"""
from __future__ import annotations

import argparse
import datetime
import platform
import resource
import subprocess
import time

import numpy as np

if not hasattr(np, "product"):  # fplanck 0.2.2 calls np.product, removed in numpy 2
    np.product = np.prod

D, MU, T_END, CENTER, WIDTH = 0.05, 1.0, 5.0, (0.5, 0.5), 0.1


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gibbs_on(X, Y, area):
    w = np.exp(-((X ** 2 - 1) ** 2 + Y ** 2) * MU / D)
    return w / (w.sum() * area)


def bench_hhld(n):
    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import double_well_2d

    t0 = time.perf_counter()
    fp = FokkerPlanck(double_well_2d(), box=[(-2, 2), (-2, 2)], cells=n, D=D, mu=MU)
    A = fp.generator
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = fp.stationary("solve")
    t_solve = time.perf_counter() - t0
    t0 = time.perf_counter()
    gb = fp.gibbs().copy()
    t_gibbs = time.perf_counter() - t0
    rho0 = fp.gaussian(CENTER, WIDTH)
    t0 = time.perf_counter()
    rt = fp.evolve(rho0, [T_END], method="contour")[0]
    t_evolve = time.perf_counter() - t0
    tight = fp.evolve(rho0, [T_END], method="contour", n_points=48)[0]
    return dict(fp=fp, A=A, setup=t_setup, solve=t_solve, gibbs_t=t_gibbs, evolve=t_evolve,
                stationary=st, gibbs=gb, rho_t=rt, self_err=fp.l1(rt, tight), mass_err=abs(fp.mass(rt) - 1))


def bench_fplanck(n, do_evolve=True):
    import fplanck

    h = 4.0 / n
    t0 = time.perf_counter()
    sim = fplanck.fokker_planck(temperature=(D / MU) / fplanck.k, drag=1.0 / MU, extent=[4.0, 4.0],
                                resolution=h * (1 + 1e-12),
                                potential=lambda x, y: (x ** 2 - 1) ** 2 + y ** 2,
                                boundary=fplanck.boundary.reflecting)
    t_setup = time.perf_counter() - t0
    assert tuple(sim.Ngrid) == (n, n), sim.Ngrid
    t0 = time.perf_counter()
    st = sim.steady_state() / (h * h)
    t_solve = time.perf_counter() - t0
    out = dict(sim=sim, setup=t_setup, solve=t_solve, stationary=st, rho_t=None, evolve=float("nan"))
    if do_evolve:
        pdf = fplanck.gaussian_pdf(center=CENTER, width=WIDTH)
        t0 = time.perf_counter()
        out["rho_t"] = sim.propagate(pdf, T_END) / (h * h)
        out["evolve"] = time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--skip-fplanck-evolve-above", type=int, default=10 ** 9,
                    help="do not run fplanck's evolution on grids with more cells per axis")
    args = ap.parse_args()
    print(f"# machine: {cpu_model()}, {platform.machine()}, python {platform.python_version()}, "
          f"date {datetime.date.today().isoformat()}")
    print(f"# problem: (th1^2-1)^2 + th2^2 on [-2,2]^2, D={D}, mu={MU}, t_end={T_END}, start N({CENTER}, {WIDTH}^2)")
    rows = []
    for n in args.sizes:
        hh = bench_hhld(n)
        fp = hh["fp"]
        X, Y = fp.grid.mesh()
        ref = gibbs_on(X, Y, fp.grid.cell_volume)
        fl = bench_fplanck(n, do_evolve=n <= args.skip_fplanck_evolve_above)
        l1 = fp.l1
        r = {
            "n": n,
            "fplanck_setup": fl["setup"], "fplanck_steady": fl["solve"],
            "fplanck_steady_l1": l1(np.real(fl["stationary"]), ref),
            "hhld_setup": hh["setup"], "hhld_steady_solve": hh["solve"], "hhld_gibbs": hh["gibbs_t"],
            "hhld_steady_l1": l1(hh["stationary"], ref), "hhld_gibbs_l1": l1(hh["gibbs"], ref),
            "fplanck_evolve": fl["evolve"], "hhld_evolve": hh["evolve"],
            "hhld_evolve_l1_gibbs": l1(hh["rho_t"], ref), "hhld_evolve_self_err": hh["self_err"],
            "hhld_mass_err": hh["mass_err"],
        }
        if fl["rho_t"] is not None:
            r["fplanck_evolve_l1_gibbs"] = l1(fl["rho_t"], ref)
            r["evolve_l1_between"] = l1(fl["rho_t"], hh["rho_t"])
            r["fplanck_mass_err"] = abs(fp.grid.integrate(fl["rho_t"]) - 1)
        rows.append(r)
        steady_ratio = (r["fplanck_setup"] + r["fplanck_steady"]) / (r["hhld_setup"] + r["hhld_steady_solve"])
        print(f"\n## {n}x{n} cells")
        print(f"steady state   fplanck: setup {r['fplanck_setup']:.3f} s + eigs {r['fplanck_steady']:.3f} s, "
              f"L1 vs Gibbs {r['fplanck_steady_l1']:.2e}")
        print(f"               hhld   : setup {r['hhld_setup']:.3f} s + solve {r['hhld_steady_solve']:.3f} s, "
              f"L1 vs Gibbs {r['hhld_steady_l1']:.2e}; closed form {r['hhld_gibbs']:.4f} s, "
              f"L1 {r['hhld_gibbs_l1']:.2e}")
        print(f"               ratio (setup+steady) fplanck/hhld-solve = {steady_ratio:.1f}x")
        if fl["rho_t"] is not None:
            ev_ratio = (r["fplanck_setup"] + r["fplanck_evolve"]) / (r["hhld_setup"] + r["hhld_evolve"])
            print(f"evolve t={T_END} fplanck: {r['fplanck_evolve']:.2f} s, L1 vs Gibbs {r['fplanck_evolve_l1_gibbs']:.4f}, "
                  f"mass err {r['fplanck_mass_err']:.1e}")
            print(f"               hhld   : {r['hhld_evolve']:.2f} s, L1 vs Gibbs {r['hhld_evolve_l1_gibbs']:.4f}, "
                  f"mass err {r['hhld_mass_err']:.1e}, time-integration err (vs 48-node run) {r['hhld_evolve_self_err']:.1e}")
            print(f"               L1 between the two solutions {r['evolve_l1_between']:.2e}; "
                  f"ratio (setup+evolve) fplanck/hhld = {ev_ratio:.1f}x")
        else:
            print(f"evolve t={T_END} hhld: {r['hhld_evolve']:.2f} s (fplanck evolution skipped)")
    print(f"\n# peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return rows


if __name__ == "__main__":
    main()
