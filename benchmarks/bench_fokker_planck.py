"""hhld.fokker_planck vs the PyPI package ``fplanck`` on the same problem, in one process.

Problem: the 2-D double well L = (th1^2 - 1)^2 + th2^2 on [-2, 2]^2, D = 0.05, mu = 1
(Gibbs exp(-L/D)), grids 128^2 and 256^2 (cell centres = fplanck's grid points):

* steady state: fplanck ``steady_state()`` (shift-invert ``eigs``; timed together with
  building its simulator, since it needs the matrix) vs hhld's user call
  ``FokkerPlanck(...).stationary()`` (default: the closed form, which is the exact discrete
  stationary state of the SG scheme; timed with the construction: grid, potential, input
  checks, normalisation) and vs ``stationary("solve")`` (construction + generator + sparse
  LU + flux-form refinement: an independent computation). Best of ``--repeat`` runs each.
* evolution to t = 5 from a Gaussian at (0.5, 0.5) (std 0.1): fplanck ``propagate``
  (``expm_multiply``, one call) vs hhld ``evolve`` (default ``method="auto"``, which picks
  the Chebyshev series here; also CRAM-16, 8 sparse LUs, and the 32-node contour integral,
  16 LUs). Totals include each package's setup.

Physics matching: fplanck has D = k T / drag, mobility 1/drag and stationary state
exp(-U / kT); with U = L, drag = 1/mu and k T = D/mu both solve
d rho/dt = mu div(rho grad L) + D lap rho. fplanck's densities are per-cell
probabilities (sum 1); they are divided by the cell area to compare densities.

Reported: wall and CPU times, L1 error against the normalised Gibbs density, and the speed
ratios. At t = 5 neither solution is near Gibbs (the inter-well time is ~1/lambda_1 ~ 1e8
at D = 0.05), so for the evolution each solver's *time-integration* error is measured
against ``reference_expmv``: exp(5 A) p0 on the solver's own matrix, by a Chebyshev series
summed in extended precision (hhld's and fplanck's
discretisations differ at O(h^2), so the L1 distance between the two answers is printed
too, but it is a discretisation difference, not an error of either integrator).

Run: ``.venv/bin/python benchmarks/bench_fokker_planck.py [--sizes 128 256] [--repeat 3]
[--skip-fplanck-evolve-above N]``; fplanck's evolution alone, chunked with progress
output: ``--fplanck-evolve-only 256 --chunks 10``.
"""
from __future__ import annotations

import argparse
import os
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


def _timed(f, repeat=1):
    """(result of the last call, best wall time, CPU time of that call)."""
    best, cpu, out = float("inf"), float("nan"), None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = f()
        dw, dc = time.perf_counter() - w, time.process_time() - c
        if dw < best:
            best, cpu = dw, dc
    return out, best, cpu


def reference_expmv(A, v, t, tol=1e-21):
    """``exp(t A) v`` to ~1e-16 for a detailed-balance generator ``A`` (real spectrum in
    ``[-||A||_1, 0]``): the Chebyshev series of :func:`hhld.fokker_planck.chebyshev_expmv`,
    summed in extended precision (``np.longdouble``, 80-bit on x86) with a hand-written CSR
    product. Independent of both packages' integrators; used to measure their
    time-integration errors."""
    import scipy.sparse as sp
    from scipy.special import ive

    A = sp.csr_matrix(A)
    data = A.data.astype(np.longdouble)
    idx, starts = A.indices, A.indptr[:-1]
    assert np.all(np.diff(A.indptr) > 0)

    def mv(x):
        return np.add.reduceat(data * x[idx], starts)

    rho = float(t) * float(abs(A).sum(axis=0).max())
    x = rho / 2
    K = int(np.sqrt(2 * x * 50)) + 64
    c = ive(np.arange(K), x).astype(np.longdouble)
    c[1:] *= 2
    tail = np.cumsum(c[::-1])[::-1]
    m = int(np.nonzero(tail < tol)[0][0])
    s = np.longdouble(2 * t) / np.longdouble(rho)
    tp = np.asarray(v, dtype=np.longdouble).ravel()
    tc = s * mv(tp) + tp
    out = c[0] * tp + c[1] * tc
    for k in range(2, m):
        w = 2 * s * mv(tc) + 2 * tc - tp
        out += c[k] * w
        tp, tc = tc, w
    return out.astype(np.float64)


def _make_fp(n):
    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import double_well_2d

    return FokkerPlanck(double_well_2d(), box=[(-2, 2), (-2, 2)], cells=n, D=D, mu=MU)


def bench_hhld(n, repeat):
    from hhld.fokker_planck import evolve_generator  # noqa: F401  (import outside the timings)

    # the user call for the stationary state, everything included: grid, potential on the
    # cells, input checks, exp(-U), normalisation (the default method is the closed form)
    st, t_default, c_default = _timed(lambda: _make_fp(n).stationary(), repeat)
    # the independent sparse solve: construction + generator + LU + refinement
    def solve():
        f = _make_fp(n)
        return f.stationary("solve")
    st_solve, t_solve, c_solve = _timed(solve, repeat)
    fp, t_setup, _ = _timed(lambda: _make_fp(n))
    rho0 = fp.gaussian(CENTER, WIDTH)
    def evolve():
        f = _make_fp(n)
        return f.evolve(rho0, [T_END])[0]          # default: method="auto" -> Chebyshev
    rt, t_evolve, c_evolve = _timed(evolve, repeat)
    rcram, t_cram, c_cram = _timed(lambda: _make_fp(n).evolve(rho0, [T_END], method="cram")[0])
    rt32, t_contour, c_contour = _timed(lambda: _make_fp(n).evolve(rho0, [T_END], method="contour")[0])
    exact = reference_expmv(fp.generator, rho0.ravel(), T_END).reshape(fp.grid.shape)
    return dict(fp=fp, setup=t_setup, default=t_default, default_cpu=c_default, stationary=st,
                solve=t_solve, solve_cpu=c_solve, stationary_solve=st_solve,
                evolve=t_evolve, evolve_cpu=c_evolve, cram=t_cram, cram_cpu=c_cram,
                contour=t_contour, contour_cpu=c_contour, rho_t=rt,
                self_err=fp.l1(rt, exact), cram_self_err=fp.l1(rcram, exact),
                contour_self_err=fp.l1(rt32, exact), mass_err=abs(fp.mass(rt) - 1))


def _fplanck_sim(n):
    import fplanck

    h = 4.0 / n
    sim = fplanck.fokker_planck(temperature=(D / MU) / fplanck.k, drag=1.0 / MU, extent=[4.0, 4.0],
                                resolution=h * (1 + 1e-12),
                                potential=lambda x, y: (x ** 2 - 1) ** 2 + y ** 2,
                                boundary=fplanck.boundary.reflecting)
    assert tuple(sim.Ngrid) == (n, n), sim.Ngrid
    return sim


def bench_fplanck(n, repeat, do_evolve=True):
    import fplanck
    h = 4.0 / n
    def steady():
        return _fplanck_sim(n).steady_state() / (h * h)
    st, t_total, c_total = _timed(steady, repeat)
    sim, t_setup, _ = _timed(lambda: _fplanck_sim(n))
    out = dict(sim=sim, setup=t_setup, steady_total=t_total, steady_cpu=c_total, stationary=st,
               rho_t=None, evolve=float("nan"), evolve_cpu=float("nan"))
    if do_evolve:
        pdf = fplanck.gaussian_pdf(center=CENTER, width=WIDTH)
        rt, out["evolve"], out["evolve_cpu"] = _timed(lambda: sim.propagate(pdf, T_END))
        out["rho_t"] = rt / (h * h)
        # fplanck's own time-integration error: its expm_multiply against the extended-precision
        # reference of exp(5 A) on *its* matrix (same discretisation)
        p0 = pdf(*sim.grid)
        p0 = p0 / p0.sum()
        ref = reference_expmv(sim.master_matrix, p0.ravel(), T_END)
        out["self_err"] = float(np.abs(rt.ravel() - ref).sum())
    return out


def _load():
    return os.getloadavg()[0]


def fplanck_evolve_chunked(n, chunks, t_end=T_END, save=None):
    """fplanck's evolution alone, as ``chunks`` equal calls of ``propagate`` (each an
    ``expm_multiply`` of the same matrix over ``t_end / chunks``; by the semigroup property
    the product is ``exp(t_end A) p0`` to the same tolerance, and ``expm_multiply``'s cost is
    proportional to ``||A|| t`` either way). Prints the wall and CPU time after every chunk,
    so a run stopped early still gives a timed partial."""
    import fplanck

    h = 4.0 / n
    t0 = time.perf_counter()
    sim = fplanck.fokker_planck(temperature=(D / MU) / fplanck.k, drag=1.0 / MU, extent=[4.0, 4.0],
                                resolution=h * (1 + 1e-12),
                                potential=lambda x, y: (x ** 2 - 1) ** 2 + y ** 2,
                                boundary=fplanck.boundary.reflecting)
    print(f"fplanck {n}x{n}: setup {time.perf_counter() - t0:.2f} s", flush=True)
    p = fplanck.gaussian_pdf(center=CENTER, width=WIDTH)(*sim.grid)
    p = p / p.sum()
    dt = t_end / chunks
    w0, c0 = time.perf_counter(), time.process_time()
    for k in range(chunks):
        cur = p
        p = sim.propagate(lambda *_: cur, dt, normalize=False)
        print(f"  t = {(k + 1) * dt:.3f}: wall {time.perf_counter() - w0:.1f} s, cpu {time.process_time() - c0:.1f} s, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    if save:
        np.save(save, p / (h * h))
    return p / (h * h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--skip-fplanck-evolve-above", type=int, default=10 ** 9,
                    help="do not run fplanck's evolution on grids with more cells per axis")
    ap.add_argument("--repeat", type=int, default=3, help="best-of-N for the steady-state timings")
    ap.add_argument("--fplanck-evolve-only", type=int, default=None, metavar="N",
                    help="only time fplanck's evolution on the N x N grid (chunked, see --chunks)")
    ap.add_argument("--chunks", type=int, default=10, help="propagate calls for --fplanck-evolve-only")
    ap.add_argument("--save", default=None, help="with --fplanck-evolve-only: save rho(t_end) to this .npy")
    args = ap.parse_args()
    if args.fplanck_evolve_only:
        fplanck_evolve_chunked(args.fplanck_evolve_only, args.chunks, save=args.save)
        return []
    print(f"# machine: {cpu_model()}, {platform.machine()}, python {platform.python_version()}, "
          f"date {datetime.date.today().isoformat()}")
    print(f"# problem: (th1^2-1)^2 + th2^2 on [-2,2]^2, D={D}, mu={MU}, t_end={T_END}, start N({CENTER}, {WIDTH}^2)")
    rows = []
    for n in args.sizes:
        load0 = _load()
        hh = bench_hhld(n, args.repeat)
        fp = hh["fp"]
        X, Y = fp.grid.mesh()
        ref = gibbs_on(X, Y, fp.grid.cell_volume)
        fl = bench_fplanck(n, args.repeat, do_evolve=n <= args.skip_fplanck_evolve_above)
        load1 = _load()
        l1 = fp.l1
        r = dict(n=n, load=(load0, load1), **{f"hhld_{k}": v for k, v in hh.items() if k not in ("fp",)},
                 **{f"fplanck_{k}": v for k, v in fl.items() if k != "sim"})
        rows.append(r)
        fst = fl["steady_total"]
        print(f"\n## {n}x{n} cells (load average {load0:.1f} -> {load1:.1f}; steady-state times: best of {args.repeat})")
        print(f"steady state   fplanck: setup + eigs {fst:.3f} s (cpu {fl['steady_cpu']:.3f}; setup alone {fl['setup']:.3f} s), "
              f"L1 vs Gibbs {l1(np.real(fl['stationary']), ref):.2e}")
        print(f"               hhld default (closed form; construct + stationary()): {hh['default']:.4f} s "
              f"(cpu {hh['default_cpu']:.4f}), L1 vs Gibbs {l1(hh['stationary'], ref):.2e}  -> ratio {fst / hh['default']:.0f}x")
        print(f"               hhld sparse solve (construct + generator + LU + refinement): {hh['solve']:.3f} s "
              f"(cpu {hh['solve_cpu']:.3f}), L1 vs Gibbs {l1(hh['stationary_solve'], ref):.2e}  -> ratio {fst / hh['solve']:.1f}x")
        print(f"               (hhld construction alone {hh['setup']:.4f} s)")
        ev_h = f"{hh['evolve']:.3f} s (cpu {hh['evolve_cpu']:.3f}; best of {args.repeat})"
        print(f"evolve t={T_END} hhld default (construct + evolve, auto -> Chebyshev): {ev_h}, mass err {hh['mass_err']:.1e}, "
              f"time-integration err (L1 vs extended-precision reference) {hh['self_err']:.1e}, L1 vs Gibbs {l1(hh['rho_t'], ref):.4f}")
        print(f"               hhld CRAM-16 (8 LU): {hh['cram']:.2f} s (cpu {hh['cram_cpu']:.2f}), "
              f"time-integration err {hh['cram_self_err']:.1e}")
        print(f"               hhld contour-32 (16 LU): {hh['contour']:.2f} s (cpu {hh['contour_cpu']:.2f}), "
              f"time-integration err {hh['contour_self_err']:.1e}")
        if fl["rho_t"] is not None:
            tot = fl["setup"] + fl["evolve"]
            print(f"               fplanck: setup + propagate {tot:.2f} s (propagate {fl['evolve']:.2f} s, cpu {fl['evolve_cpu']:.2f}), "
                  f"mass err {abs(fp.grid.integrate(fl['rho_t']) - 1):.1e}, time-integration err (L1 vs the reference on its "
                  f"matrix, extended-precision reference) {fl['self_err']:.1e}, L1 vs Gibbs {l1(fl['rho_t'], ref):.4f}")
            print(f"               L1 between the two solutions {l1(fl['rho_t'], hh['rho_t']):.2e}; "
                  f"ratio fplanck/hhld-default = {tot / hh['evolve']:.1f}x (cpu {(fl['evolve_cpu']) / hh['evolve_cpu']:.1f}x propagate-only)")
        else:
            print("               fplanck evolution skipped")
    print(f"\n# peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return rows


if __name__ == "__main__":
    main()
