"""``hhld solve fokker-planck``: the master equation of a landscape on a grid.

Writes to ``--out`` (default ``runs/fokker-planck``): ``results.npz`` (times, snapshots, grid
axes, Gibbs density, spectrum, KL(t), entropy, free energy, entropy-production terms),
``summary.json``, and figures: density snapshots, the low spectrum, KL(t) on a log scale, and an
animation (GIF with Pillow, else PNG frames).

The options match ``hhld solve schrodinger`` (``--cells/-n``, ``--snapshots`` after t = 0,
``--out/-o``, ``--option``, ``--eigen``, ``--force``). Before anything is computed the peak
memory and the wall time are estimated (:func:`estimate`); a run that does not fit is refused
with the estimate.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from ._common import (check_out_dir, cli_errors, fmt_bytes, fmt_seconds, parse_box, parse_options, parse_vector,
                      refuse_if_oversized)

#: timings of this machine class (2-core CPU, 2026-11): sparse products and factorisations
_NS_PER_NNZ = 5.0            # one sparse matrix-vector product, per stored entry
_LU_SECONDS = {1: (5e-6, 1.0), 2: (1.35 / 160000 ** 1.5, 1.5), 3: (1.2 / 13824 ** 2.3, 2.3)}  # t = a n^b
_SUPERLU_MAX_NNZ = 2 ** 31 - 1  # SuperLU indexes its factors with 32-bit integers


def _fill(dim: int, cells: int, kind: str) -> float:
    """Measured fill (nnz of L+U over nnz of the matrix) of SuperLU on these generators."""
    c = max(cells, 2)
    if dim == 1:
        return 1.5
    if dim == 2:
        return max(5.0, 4.6 * math.log2(c) - 17.6) if kind == "colamd" else max(3.0, 2.4 * math.log2(c) - 8.5)
    base = 90.0 if kind == "colamd" else 43.5
    return base * (c / 24.0) ** 1.67


def size_bounds(dim: int, cells: int, snapshots: int) -> dict:
    """Lower bounds that need no landscape and no solver: ``{"cells", "lu_nnz", "bytes"}`` (the
    grid arrays, the two sparse matrices, the snapshots and the LU of the stationary solve)."""
    n = float(cells) ** dim
    nnz = (2 * dim + 1) * n
    lu_nnz = _fill(dim, cells, "colamd") * nnz
    mem = 200 * 2 ** 20 + n * 8 * (dim + 10) + 2 * 3 * nnz * 12 + (snapshots + 1) * n * 8 * 2 + lu_nnz * 12
    return {"cells": n, "lu_nnz": lu_nnz, "bytes": mem}


def _refuse_size(cells: int, n: float, lu_nnz: float, mem: float, force: bool) -> None:
    if lu_nnz > _SUPERLU_MAX_NNZ and not force:
        raise typer.BadParameter(
            f"got {cells}: {int(n):,} cells need sparse LU factors with about {lu_nnz:.3g} entries, "
            f"beyond SuperLU's 32-bit indices ({_SUPERLU_MAX_NNZ:.3g}), and about {fmt_bytes(mem)} "
            f"of memory; use fewer cells", param_hint="'--cells'")


def estimate(land, box, cells, D: float, mu: float, t_end: float, snapshots: int, k: int,
             method: str = "auto") -> dict:
    """Up-front estimate of a run: ``{"bytes", "seconds", "method", "lu_nnz", "cells"}``.

    Sizes follow the code (grid arrays, two sparse matrices, the snapshots, SuperLU factors with the
    measured fill); times use the measured costs of a sparse product and of a factorisation on a
    2-core CPU. Both are estimates to within a factor of about 3; they exist to refuse runs that
    cannot fit (``--cells 100000``: tens of GiB; ``--cells 3000`` in 2-D: SuperLU factors beyond its
    32-bit indices), not to predict run times.
    """
    from ..fokker_planck.evolve import CHEBYSHEV_MAX_RHO, chebyshev_degree

    d = land.dim
    cl = [int(cells)] * d if np.ndim(cells) == 0 else [int(c) for c in cells]
    n = float(np.prod([float(c) for c in cl]))
    nnz = (2 * d + 1) * n
    h = [(hi - lo) / c for (lo, hi), c in zip(box, cl)]
    # |dL/dtheta_k| on a coarse sample of the box bounds the drift part of the jump rates
    axes = [np.linspace(lo, hi, 17) for lo, hi in box]
    pts = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=-1)
    with np.errstate(all="ignore"):
        g = np.abs(np.asarray(land.grad(pts), dtype=np.float64)).reshape(-1, d)
    gmax = np.nanmax(np.where(np.isfinite(g), g, np.nan), axis=0) if np.isfinite(g).any() else np.zeros(d)
    gmax = np.nan_to_num(gmax)
    norm1 = 2.0 * sum(D / (hk * hk) + mu * gk / hk for hk, gk in zip(h, gmax))  # hk * hk: inf, never OverflowError
    dt = t_end / snapshots
    rho = norm1 * dt
    m = method
    if m == "auto":
        if rho < 200:
            m = "expm"
        elif math.sqrt(rho) <= max(2000.0, 100.0 * math.sqrt(n)) and chebyshev_degree(rho)[0] <= max(
                2000.0, 100.0 * math.sqrt(n)):
            m = "chebyshev"
        else:
            m = "cram"
    a, b = _LU_SECONDS[d]
    t_lu = a * n ** b
    f_mmd, f_colamd = _fill(d, max(cl), "mmd"), _fill(d, max(cl), "colamd")
    matvec = _NS_PER_NNZ * 1e-9 * nnz
    lu_nnz = 0.0
    if m == "expm":
        seconds = snapshots * (2 * rho + 20) * matvec
        work = 8 * n * 8
    elif m == "chebyshev":
        deg = chebyshev_degree(rho)[0] if rho <= CHEBYSHEV_MAX_RHO else float("inf")
        seconds = snapshots * (deg + 5) * matvec
        work = 8 * n * 8
    else:
        n_lu = 8 if m == "cram" else 16
        lu_nnz = f_mmd * nnz
        seconds = n_lu * 2 * t_lu + snapshots * n_lu * 2 * lu_nnz * _NS_PER_NNZ * 1e-9
        work = n_lu * lu_nnz * 20 + 4 * n * 16
    spec_mem = spec_s = 0.0
    if k > 0:
        if n < 600:
            spec_mem, spec_s = 3 * n * n * 8, 1e-8 * n ** 3
        else:
            lu_nnz = max(lu_nnz, f_colamd * nnz)
            ncv = max(2 * k + 1, 20)
            spec_mem = f_colamd * nnz * 12 + ncv * n * 8
            spec_s = 2 * t_lu + 3 * ncv * 2 * f_colamd * nnz * _NS_PER_NNZ * 1e-9
    stat_mem, stat_s = f_colamd * nnz * 12, t_lu
    lu_nnz = max(lu_nnz, f_colamd * nnz)
    base = n * 8 * (d + 10) + 2 * 3 * nnz * 12
    snaps = (snapshots + 1) * n * 8 * 2
    mem = 200 * 2 ** 20 + base + snaps + max(work, spec_mem, stat_mem)
    seconds += spec_s + stat_s + 2.0 + 0.3 * (snapshots + 1) + snapshots * 20 * matvec
    return {"bytes": mem, "seconds": seconds, "method": m, "lu_nnz": lu_nnz, "cells": n}


def _show(ax, fp, rho, title):
    g = fp.grid
    if g.dim == 1:
        ax.plot(g.axes[0], rho, label="rho")
        ax.plot(g.axes[0], fp.gibbs(), "k--", lw=0.8, label="Gibbs")
        ax.set_xlabel("theta")
    else:
        img = rho if g.dim == 2 else rho.sum(axis=2) * g.h[2]
        ax.imshow(img.T, origin="lower", extent=[g.lo[0], g.hi[0], g.lo[1], g.hi[1]], aspect="auto",
                  cmap="viridis")
        ax.set_xlabel("theta_1")
        ax.set_ylabel("theta_2")
    ax.set_title(title, fontsize=9)


@dataclass(frozen=True)
class Request:
    """A checked ``solve fokker-planck`` request (what :func:`compute` needs) and its up-front estimate."""

    land: object
    box: list
    cells: int
    D: float
    mu: float
    t_end: float
    snapshots: int
    center: Optional[list]
    width: float
    seed: int
    k: int
    method: str
    estimate: dict


@dataclass
class Solution:
    """What :func:`compute` returns: the solver, the snapshots and the functionals along them."""

    fp: object
    center: list
    times: np.ndarray
    snaps: np.ndarray
    spec: object
    kl: list
    entropy: list
    free_energy: list
    masses: list
    entropy_production: list
    stationary: np.ndarray
    evolve_seconds: float


def check_request(landscape: str, *, cells, box: Optional[str], D: float, mu: float, t_end: float, snapshots: int,
                  center: Optional[str], width: float, seed: int, k: int, method: str,
                  options: Optional[list[str]] = None, force: bool = False) -> Request:
    """Every check, before any solver is imported: bad input and impossible sizes fail at once (the
    up-front memory / time estimate refuses a run that does not fit unless ``force``)."""
    from .._validation import check_int, check_positive
    from ..landscapes import get_landscape

    cells = check_int("--cells", cells, minimum=2)
    D = check_positive("--D (the diffusion constant)", D)
    mu = check_positive("--mu", mu)
    t_end = check_positive("--t-end", t_end)
    snapshots = check_int("--snapshots", snapshots, minimum=1)
    width = check_positive("--width", width)
    k = check_int("--eigen", k, minimum=0)
    seed = check_int("--seed", seed, minimum=0)
    land = get_landscape(landscape, **parse_options(options))
    if land.dim > 3:
        raise typer.BadParameter(f"the grid has 1-3 dimensions; landscape {land.name!r} has dim={land.dim}",
                                 param_hint="'--landscape'")
    bounds = size_bounds(land.dim, cells, snapshots)
    _refuse_size(cells, bounds["cells"], bounds["lu_nnz"], bounds["bytes"], force)
    refuse_if_oversized(f"--cells {cells} ({int(bounds['cells']):,} cells)", bounds["bytes"], 0.0, force,
                        how_to_shrink="use fewer --cells or fewer --snapshots")
    bx = parse_box(box, land.dim) or land.box
    if k >= cells ** land.dim - 1:
        raise typer.BadParameter(f"got {k}; the grid has {cells ** land.dim} cells, so at most "
                                 f"{cells ** land.dim - 2} eigenvalues", param_hint="'--eigen'")
    if method not in ("auto", "expm", "chebyshev", "cram", "contour"):
        raise typer.BadParameter(f"got {method!r}; choose auto, expm, chebyshev, cram or contour",
                                 param_hint="'--method'")
    c = parse_vector(center, land.dim, "--center")
    if c is not None and any(not lo <= ck <= hi for ck, (lo, hi) in zip(c, bx)):
        raise typer.BadParameter(f"got {center!r}, outside the box {bx}", param_hint="'--center'")
    est = estimate(land, bx, cells, D, mu, t_end, snapshots, k, method)
    _refuse_size(cells, est["cells"], est["lu_nnz"], est["bytes"], force)
    refuse_if_oversized(f"--cells {cells} ({int(est['cells']):,} cells, {est['method']} steps)", est["bytes"],
                        est["seconds"], force, how_to_shrink="use fewer --cells, a shorter --t-end or fewer --snapshots")
    return Request(land, bx, cells, D, mu, t_end, snapshots, None if c is None else list(c), width, seed, k, method,
                   est)


def compute(req: Request, quiet: bool = True) -> Solution:
    """Evolve the initial Gaussian, compute the spectrum and the functionals along the snapshots."""
    import time

    from rich.progress import Progress

    from ..fokker_planck import FokkerPlanck

    fp = FokkerPlanck(req.land, box=req.box, cells=req.cells, D=req.D, mu=req.mu)
    c = req.center
    if c is None:  # the seed only picks the default off-centre start
        rng = np.random.default_rng(req.seed)
        c = [0.5 * (lo + hi) + 0.25 * (hi - lo) * float(rng.uniform(-1, 1)) for lo, hi in fp.grid.box]
    rho0 = fp.gaussian(c, req.width)
    times = np.linspace(0.0, req.t_end, req.snapshots + 1)
    t0 = time.perf_counter()
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("evolving", total=len(times))
        snaps = fp.evolve(rho0, times, method=req.method, callback=lambda i, t: progress.advance(task))
        t_evolve = time.perf_counter() - t0
        task2 = progress.add_task("spectrum + functionals", total=len(times) + 1)
        spec = fp.spectrum(req.k) if req.k > 0 else None
        progress.advance(task2)
        kl, ent, fe, masses, eps = [], [], [], [], []
        for r in snaps:
            kl.append(fp.kl(r))
            ent.append(fp.entropy(r))
            fe.append(fp.free_energy(r))
            masses.append(fp.mass(r))
            eps.append(fp.entropy_production(r).as_dict())
            progress.advance(task2)
    return Solution(fp, list(c), times, snaps, spec, kl, ent, fe, masses, eps, fp.stationary("solve"), t_evolve)


def save(req: Request, sol: Solution, out: Path) -> dict:
    """``results.npz`` and ``summary.json`` in ``out``; returns the summary."""
    fp, spec = sol.fp, sol.spec
    ep_keys = list(sol.entropy_production[0])
    np.savez_compressed(
        out / "results.npz", times=sol.times, snapshots=sol.snaps, gibbs=fp.gibbs(), stationary=sol.stationary,
        **{f"axis_{i}": a for i, a in enumerate(fp.grid.axes)},
        **({"rates": spec.rates, "modes": spec.modes} if spec is not None else {}), kl=np.array(sol.kl),
        entropy=np.array(sol.entropy), free_energy=np.array(sol.free_energy), mass=np.array(sol.masses),
        **{f"ep_{key}": np.array([e[key] for e in sol.entropy_production]) for key in ep_keys})
    est = req.estimate
    summary = {
        "landscape": req.land.name, "dim": req.land.dim, "box": fp.grid.box, "cells": list(fp.grid.cells),
        "D": fp.D, "mu": fp.mu, "t_end": req.t_end, "snapshots": req.snapshots, "center": list(map(float, sol.center)),
        "width": req.width, "seed": req.seed, "method": req.method,
        "rates": spec.rates.tolist() if spec is not None else None,
        "relaxation_rate": spec.relaxation_rate if req.k > 1 and spec.resolved(1) else None,
        "estimate": {"memory_bytes": est["bytes"], "seconds": est["seconds"], "method": est["method"]},
        "kl_final": sol.kl[-1], "l1_final_vs_gibbs": fp.l1(sol.snaps[-1]),
        "l1_stationary_solve_vs_gibbs": fp.l1(sol.stationary),
        "max_mass_error": float(np.max(np.abs(np.array(sol.masses) - 1))),
        "min_density": float(sol.snaps.min()), "evolve_seconds": sol.evolve_seconds,
        "entropy_production_final": sol.entropy_production[-1],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def figure_snapshots(sol: Solution, out: Path, plt) -> str:
    """Up to six density snapshots side by side: ``density_snapshots.png``."""
    times = sol.times
    idx = np.unique(np.linspace(0, len(times) - 1, min(6, len(times))).round().astype(int))
    fig, axes = plt.subplots(1, len(idx), figsize=(3 * len(idx), 3), squeeze=False)
    for ax, i in zip(axes[0], idx):
        _show(ax, sol.fp, sol.snaps[i], f"t = {times[i]:.3g}")
    return _save(fig, out, "density_snapshots.png", plt)


def figure_spectrum(sol: Solution, out: Path, plt) -> str | None:
    """The low spectrum of the generator: ``spectrum.png`` (None without a spectrum)."""
    if sol.spec is None:
        return None
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(len(sol.spec.rates)), sol.spec.rates, "o")
    ax.set_xlabel("n")
    ax.set_ylabel("decay rate lambda_n")
    ax.set_title("low spectrum of the generator")
    return _save(fig, out, "spectrum.png", plt)


def figure_kl(sol: Solution, out: Path, plt) -> str:
    """KL(rho_t || rho*) on a log scale: ``kl.png``."""
    fig, ax = plt.subplots(figsize=(4, 3))
    kla = np.array(sol.kl)
    pos = kla > 0
    ax.semilogy(sol.times[pos], kla[pos], "-o", ms=3)
    ax.set_xlabel("t")
    ax.set_ylabel("KL(rho_t || rho*)")
    return _save(fig, out, "kl.png", plt)


def _save(fig, out: Path, name: str, plt) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def figures(sol: Solution, out: Path, summary: dict, animate: bool = True) -> dict:
    """The four figures (snapshots, spectrum, KL(t), the animation) in ``out``; records the animation's
    file in ``summary`` and rewrites ``summary.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_snapshots(sol, out, plt)
    figure_spectrum(sol, out, plt)
    figure_kl(sol, out, plt)
    summary["animation"] = _animate(out, sol.fp, sol.snaps, sol.times, plt) if animate else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run(landscape: str, *, out: Path, quiet: bool = True, animate: bool = True, options: Optional[list[str]] = None,
        force: bool = False, **settings) -> dict:
    """The whole command: :func:`check_request` (``settings``: cells, box, D, mu, t_end, snapshots,
    center, width, seed, k, method), the output directory, :func:`compute`, :func:`save`,
    :func:`figures`; returns the summary."""
    req = check_request(landscape, options=options, force=force, **settings)
    out = check_out_dir(out)
    sol = compute(req, quiet=quiet)
    summary = save(req, sol, out)
    return figures(sol, out, summary, animate)


def _animate(out, fp, snaps, times, plt) -> str:
    """``density.gif`` (with Pillow), else PNG frames in ``frames/``; the name written."""
    try:
        import PIL  # noqa: F401
        from matplotlib.animation import FuncAnimation, PillowWriter

        fig, ax = plt.subplots(figsize=(4, 3.5))

        def frame(i):
            ax.clear()
            _show(ax, fp, snaps[i], f"t = {times[i]:.3g}")

        anim = FuncAnimation(fig, frame, frames=len(times))
        anim.save(out / "density.gif", writer=PillowWriter(fps=5))
        plt.close(fig)
        return "density.gif"
    except ImportError:
        frames = out / "frames"
        frames.mkdir(exist_ok=True)
        for i in range(len(times)):
            fig, ax = plt.subplots(figsize=(4, 3.5))
            _show(ax, fp, snaps[i], f"t = {times[i]:.3g}")
            fig.savefig(frames / f"frame_{i:04d}.png", dpi=80)
            plt.close(fig)
        return "frames/"


def register(app: typer.Typer) -> None:
    """Add ``fokker-planck`` to the ``hhld solve`` group."""

    @app.command("fokker-planck")
    @cli_errors
    def fokker_planck(
        landscape: str = typer.Option("double_well_2d", "--landscape", "-l", help="landscape registry name"),
        option: Optional[List[str]] = typer.Option(None, "--option", help="landscape keyword KEY=VALUE (repeatable), e.g. dim=2"),
        cells: int = typer.Option(128, "--cells", "--points", "-n", help="cells per axis"),
        box: Optional[str] = typer.Option(None, "--box", help="'lo,hi' (all axes) or 'lo1,hi1,lo2,hi2,...'; default: the landscape's box"),
        D: float = typer.Option(0.05, "--D", "-D", help="diffusion constant D > 0"),
        mu: float = typer.Option(1.0, "--mu", help="mobility (1, or 1/eta for the documents' master equation)"),
        t_end: float = typer.Option(5.0, "--t-end", help="final time"),
        snapshots: int = typer.Option(20, "--snapshots", help="number of equally spaced snapshots after t=0"),
        center: Optional[str] = typer.Option(None, "--center", help="initial Gaussian centre 'x1,x2,...' (default: random from --seed)"),
        width: float = typer.Option(0.1, "--width", help="initial Gaussian standard deviation"),
        k: int = typer.Option(6, "--eigen", "--k", help="number of eigenvalues of the spectrum (0: none)"),
        method: str = typer.Option("auto", "--method", help="time integrator: auto (by ‖A‖·t), expm, chebyshev, cram, contour"),
        out: Path = typer.Option(Path("runs/fokker-planck"), "--out", "-o", help="output directory"),
        seed: int = typer.Option(0, "--seed", help="seed of the default initial centre"),
        animate: bool = typer.Option(True, "--animate/--no-animate", help="write density.gif (or PNG frames)"),
        force: bool = typer.Option(False, "--force", help="run even when the up-front estimate exceeds the "
                                   "available memory or an hour"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar, no summary print"),
    ):
        """Solve the master equation d rho/dt = mu div(rho grad L) + D lap rho on a grid."""
        summary = run(landscape, out=out, quiet=quiet, animate=animate, options=option, force=force, cells=cells,
                      box=box, D=D, mu=mu, t_end=t_end, snapshots=snapshots, center=center, width=width, seed=seed,
                      k=k, method=method)
        if not quiet:
            typer.echo(json.dumps({key: summary[key] for key in
                                   ("landscape", "cells", "D", "mu", "rates", "kl_final",
                                    "max_mass_error", "evolve_seconds")}, indent=1))
            est = summary["estimate"]
            typer.echo(f"wrote {out}/results.npz, summary.json and figures (estimated up front: "
                       f"{fmt_bytes(est['memory_bytes'])}, {fmt_seconds(est['seconds'])})")
