"""``hhld solve schrodinger``: real-time Schrodinger evolution (split-step Fourier) of a Gaussian
packet on a landscape, and optionally its lowest stationary states.

The options match ``hhld solve fokker-planck`` (``--cells/-n``, ``--snapshots`` after t = 0,
``--out/-o``, ``--option``, ``--eigen``, ``--force``); the memory and wall time are estimated
before anything runs and an oversized run is refused with the estimate.

Writes into ``--out`` (default ``runs/schrodinger``): ``schrodinger.npz`` (grid axes, potential, times, snapshots, norms,
energies, eigenpairs), ``summary.json``, and figures: ``density_snapshots.png``,
``norm_energy.png``, ``spectrum.png`` (with ``--eigen``), ``density.gif`` (PillowWriter, when
pillow is importable; otherwise ``frames/frame_XXX.png``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import List, Optional

import typer

from ._common import (check_out_dir, cli_errors, parse_box, parse_options, parse_vector, refuse_if_oversized)


def _density_2d(dens, dim):
    """A 2-D view of a density: itself (2-D) or its marginal on the first two axes (3-D)."""
    return dens if dim == 2 else dens.sum(axis=tuple(range(2, dim)))


def _figures(out: Path, grid, V, res, eig, quiet: bool, animate: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
    dens = np.abs(res.snapshots) ** 2
    ext = [grid.box[0][0], grid.box[0][1]] + ([grid.box[1][0], grid.box[1][1]] if grid.dim > 1 else [])
    # snapshots
    if grid.dim == 1:
        x = grid.axes()[0]
        fig, ax = plt.subplots(figsize=(7, 4))
        cmap = plt.get_cmap("viridis")
        for i, (t, d) in enumerate(zip(res.times, dens)):
            ax.plot(x, d, color=cmap(i / max(1, len(dens) - 1)), lw=1, label=f"t={t:.3g}" if i in (0, len(dens) - 1) else None)
        ax2 = ax.twinx()
        ax2.plot(x, V, "k--", lw=0.8)
        ax2.set_ylabel("V")
        ax.set_xlabel("theta")
        ax.set_ylabel("|Psi|^2")
        ax.legend(loc="upper right")
    else:
        k = min(6, len(dens))
        idx = np.linspace(0, len(dens) - 1, k).round().astype(int)
        fig, axes = plt.subplots(1, k, figsize=(3 * k, 3), squeeze=False)
        for a, i in zip(axes[0], idx):
            a.imshow(_density_2d(dens[i], grid.dim).T, origin="lower", extent=ext, aspect="auto", cmap="magma")
            a.set_title(f"t={res.times[i]:.3g}")
    fig.tight_layout()
    fig.savefig(out / "density_snapshots.png", dpi=110)
    plt.close(fig)
    files.append("density_snapshots.png")
    # norm and energy
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(res.times, np.abs(res.norms - 1.0) + 1e-18, "o-")
    axes[0].set_yscale("log")
    axes[0].set_title("| ||Psi|| - 1 |")
    axes[1].plot(res.times, res.energies, "o-")
    axes[1].set_title("<H>")
    for a in axes:
        a.set_xlabel("t")
    fig.tight_layout()
    fig.savefig(out / "norm_energy.png", dpi=110)
    plt.close(fig)
    files.append("norm_energy.png")
    # spectrum
    if eig is not None:
        E, psi = eig
        fig, ax = plt.subplots(figsize=(7, 4))
        if grid.dim == 1:
            x = grid.axes()[0]
            ax.plot(x, V, "k", lw=1)
            scale = 0.4 * (E[-1] - E[0] if len(E) > 1 else 1.0) / max(1, len(E)) / max(np.abs(psi).max(), 1e-300)
            for n, (e, p) in enumerate(zip(E, psi)):
                ax.axhline(e, color="0.8", lw=0.6)
                ax.plot(x, e + scale * p, lw=1, label=f"E{n}={e:.5g}")
            ax.set_ylim(min(V.min(), E[0]) - 0.1 * abs(E[-1] - E[0] + 1e-9), E[-1] + 0.5 * abs(E[-1] - E[0] + 1e-9) + 1e-9)
            ax.set_xlabel("theta")
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.plot(range(len(E)), E, "o")
            ax.set_xlabel("n")
        ax.set_ylabel("E_n")
        ax.set_title("stationary states")
        fig.tight_layout()
        fig.savefig(out / "spectrum.png", dpi=110)
        plt.close(fig)
        files.append("spectrum.png")
    # animation
    if animate:
        try:
            import PIL  # noqa: F401

            have_pil = True
        except ImportError:
            have_pil = False
        fig, ax = plt.subplots(figsize=(6, 4))
        if grid.dim == 1:
            x = grid.axes()[0]
            (line,) = ax.plot(x, dens[0])
            ax.set_ylim(0, 1.05 * dens.max())
            ax.set_xlabel("theta")
            draw = lambda i: line.set_ydata(dens[i])  # noqa: E731
        else:
            im = ax.imshow(_density_2d(dens[0], grid.dim).T, origin="lower", extent=ext, aspect="auto", cmap="magma",
                           vmin=0, vmax=max(_density_2d(d, grid.dim).max() for d in dens))
            draw = lambda i: im.set_data(_density_2d(dens[i], grid.dim).T)  # noqa: E731
        title = ax.set_title("")

        def update(i):
            draw(i)
            title.set_text(f"|Psi|^2, t={res.times[i]:.3g}")
            return ()

        if have_pil:
            from matplotlib.animation import FuncAnimation, PillowWriter

            anim = FuncAnimation(fig, update, frames=len(dens), blit=False)
            anim.save(out / "density.gif", writer=PillowWriter(fps=8))
            files.append("density.gif")
        else:
            (out / "frames").mkdir(exist_ok=True)
            for i in range(len(dens)):
                update(i)
                fig.savefig(out / "frames" / f"frame_{i:03d}.png", dpi=90)
            files.append("frames/")
        plt.close(fig)
    return files


#: measured cost of one split-step per grid point (two FFTs and three phase products), 2-core CPU
_NS_PER_POINT_STEP = 120.0
_STEP_OVERHEAD_S = 2e-5


def estimate(points: int, dim: int, t_end: float, dt: float, snapshots: int, eigen: int) -> dict:
    """Up-front estimate ``{"bytes", "seconds", "steps"}`` of a run (complex128 states: the stored
    snapshots plus about ten work arrays; steps as :meth:`SplitStepSolver.evolve` takes them;
    the eigenpairs by a dense solver up to 600 points, else shift-invert with a sparse LU)."""
    n = float(points) ** dim
    steps_per = max(1.0, math.ceil(t_end / snapshots / dt))
    steps = steps_per * snapshots
    mem = 200 * 2 ** 20 + (snapshots + 1) * n * 16 * 2 + 12 * n * 16
    seconds = steps * (n * _NS_PER_POINT_STEP * 1e-9 + _STEP_OVERHEAD_S) + (snapshots + 1) * n * 50e-9 + 2.0
    if eigen > 0:
        if n <= 600:
            mem += 3 * n * n * 8
            seconds += 1e-8 * n ** 3
        else:
            fill = 2.0 if dim == 1 else (30.0 if dim == 2 else 150.0)
            nnz = (4 * dim + 1) * n
            mem += fill * nnz * 12 + (2 * eigen + 20) * n * 8 + 2 * eigen * n * 8
            seconds += (1e-6 * n ** (1.0 if dim == 1 else 1.5)) + 100 * (2 * eigen + 20) * fill * nnz * 5e-9
    return {"bytes": mem, "seconds": seconds, "steps": steps}


@cli_errors
def schrodinger(
    landscape: str = typer.Option("double_well_1d", "--landscape", "-l", help="landscape name (hhld.landscapes registry)"),
    option: Optional[List[str]] = typer.Option(None, "--option", help="landscape keyword KEY=VALUE (repeatable), e.g. dim=2"),
    points: Optional[int] = typer.Option(None, "--cells", "--points", "-n",
                                         help="grid points per axis (>= 4; default 512 in 1-D, 256 in 2-D and 3-D)"),
    box: Optional[str] = typer.Option(None, "--box", help="'lo,hi' (all axes) or 'lo1,hi1,lo2,hi2,...'; default: the "
                                      "landscape's box doubled about its centre (the periodic box must hold the packet)"),
    hbar: Optional[float] = typer.Option(None, "--hbar", help="hbar > 0 (default 1, or sqrt(eta D) with --eta/--D)"),
    mass: float = typer.Option(1.0, "--mass", "-m", help="mass m > 0"),
    eta: Optional[float] = typer.Option(None, "--eta", help="documents' eta > 0: hbar = sqrt(eta D)"),
    diffusion: Optional[float] = typer.Option(None, "--D", "-D", help="documents' D > 0: hbar = sqrt(eta D)"),
    center: Optional[str] = typer.Option(None, "--center", help="packet centre, comma-separated (default: first known minimum)"),
    width: float = typer.Option(0.2, "--width", help="packet position spread Delta x > 0"),
    momentum: Optional[str] = typer.Option(None, "--momentum", help="packet mean momentum, comma-separated"),
    t_end: float = typer.Option(5.0, "--t-end", help="final time"),
    snapshots: int = typer.Option(20, "--snapshots", help="number of equally spaced snapshots after t=0"),
    dt: float = typer.Option(1e-3, "--dt", help="largest split-step time step"),
    eigen: int = typer.Option(0, "--eigen", "--k", help="also compute the K lowest stationary states (0: none)"),
    out: Path = typer.Option(Path("runs/schrodinger"), "--out", "-o", help="output directory"),
    animate: bool = typer.Option(True, "--animate/--no-animate", help="write density.gif (or PNG frames)"),
    force: bool = typer.Option(False, "--force", help="run even when the up-front estimate exceeds the "
                               "available memory or an hour"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or summary table"),
) -> None:
    """Evolve a Gaussian packet under i hbar dPsi/dt = (-(hbar^2/2m) lap + L) Psi (split-step Fourier)."""
    import numpy as np

    from .._validation import check_int, check_positive
    from ..landscapes import get_landscape

    # cheap checks first (no solver imported): bad input fails at once
    if (eta is None) != (diffusion is None):
        raise typer.BadParameter("--eta and --D go together (hbar = sqrt(eta D))", param_hint="'--eta' / '--D'")
    if eta is not None:
        if hbar is not None:
            raise typer.BadParameter("give either --hbar or --eta/--D, not both", param_hint="'--hbar'")
        from ..quantum.units import hbar_from_eta_D

        hbar = hbar_from_eta_D(check_positive("--eta", eta), check_positive("--D", diffusion))
    hbar = check_positive("--hbar", 1.0 if hbar is None else hbar)
    mass = check_positive("--mass", mass)
    width = check_positive("--width", width)
    t_end = check_positive("--t-end", t_end)
    dt = check_positive("--dt", dt)
    snapshots = check_int("--snapshots", snapshots, minimum=1)
    eigen = check_int("--eigen", eigen, minimum=0)
    L = get_landscape(landscape, **parse_options(option))
    dim = L.dim
    points = check_int("--cells", (512 if dim == 1 else 256) if points is None else points, minimum=4)
    if dim > 3:
        raise typer.BadParameter(f"grids have 1-3 dimensions; landscape {L.name!r} has dim={dim}",
                                 param_hint="'--landscape'")
    if eigen >= points ** dim - 1:
        raise typer.BadParameter(f"got {eigen}; the grid has {points ** dim} points, so at most "
                                 f"{points ** dim - 2} stationary states", param_hint="'--eigen'")
    # the landscape's box doubled: on the box itself the default packet reaches the periodic box's faces (1-2 % of
    # |psi|^2 in 1-D, <x> off by up to 0.58 against a larger box: wrong output, silently, until 2026-12-02)
    bx = parse_box(box, dim) or [(0.5 * (lo + hi) - (hi - lo), 0.5 * (lo + hi) + (hi - lo)) for lo, hi in L.box]
    est = estimate(points, dim, t_end, dt, snapshots, eigen)
    refuse_if_oversized(f"this run ({points}^{dim} points, {est['steps']:.3g} steps of dt <= {dt:g})", est["bytes"],
                        est["seconds"], force, how_to_shrink="use fewer --cells, a shorter --t-end or a larger --dt")
    from ..quantum import eigen as qeigen
    from ..quantum.grid import make_grid
    from ..quantum.schrodinger import SplitStepSolver

    grid = make_grid(points, bx)
    mins = L.minima()
    c = (np.array(parse_vector(center, dim, "--center")) if center is not None
         else (np.asarray(mins[0], dtype=np.float64) if mins else np.zeros(dim)))
    p = np.array(parse_vector(momentum, dim, "--momentum") or [0.0] * dim)
    V = grid.evaluate(L)
    psi0 = grid.gaussian_packet(c, width, p, hbar=hbar)
    solver = SplitStepSolver(grid, V, hbar, mass, dt=dt)
    out = check_out_dir(out)

    t0 = time.perf_counter()
    if quiet:
        res = solver.evolve(psi0, t_end, snapshots + 1)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]schrodinger"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn()) as prog:
            task = prog.add_task("evolve", total=snapshots)
            res = solver.evolve(psi0, t_end, snapshots + 1, callback=lambda i, n: prog.update(task, completed=i))
    t_evolve = time.perf_counter() - t0
    if not (np.all(np.isfinite(res.energies)) and np.all(np.isfinite(res.norms))):
        raise ValueError("the evolution produced non-finite values; check the potential and --dt")
    eig = None
    if eigen > 0:
        E, psis = qeigen.eigenstates(grid, V, hbar, mass, k=eigen, order=4)
        eig = (E, psis)
    files = _figures(out, grid, V, res, eig, quiet, animate)

    arrays = {f"axis{k}": a for k, a in enumerate(grid.axes())}
    arrays.update(potential=V, times=res.times, snapshots=res.snapshots, norms=res.norms, energies=res.energies,
                  spectral_tails=res.spectral_tails)
    if eig is not None:
        arrays.update(eigenvalues=eig[0], eigenstates=eig[1])
    np.savez_compressed(out / "schrodinger.npz", **arrays)
    summary = {
        "landscape": L.name, "dim": dim, "points": list(grid.shape), "box": [list(b) for b in grid.box],
        "hbar": hbar, "m": mass, "eta": eta, "D": diffusion,
        "packet": {"center": c.tolist(), "width": width, "momentum": p.tolist()},
        "t_end": t_end, "dt": res.meta["dt"], "steps": res.meta["steps"], "snapshots": snapshots,
        "max_norm_error": float(np.max(np.abs(res.norms - 1.0))),
        "energy_drift": float(np.ptp(res.energies)), "energy": float(res.energies[0]),
        "max_spectral_tail": float(np.max(res.spectral_tails)),
        "eigenvalues": None if eig is None else eig[0].tolist(),
        "wall_time_s": t_evolve, "files": ["schrodinger.npz", "summary.json"] + files,
        "estimate": {"memory_bytes": est["bytes"], "seconds": est["seconds"]},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if not quiet:
        from rich.console import Console
        from rich.table import Table

        tab = Table(title=f"hhld solve schrodinger -> {out}")
        tab.add_column("quantity")
        tab.add_column("value")
        for key in ("landscape", "points", "hbar", "m", "t_end", "steps", "max_norm_error", "energy", "energy_drift",
                    "max_spectral_tail", "wall_time_s"):
            tab.add_row(key, str(summary[key]))
        if eig is not None:
            tab.add_row("eigenvalues", ", ".join(f"{e:.6g}" for e in eig[0]))
        Console().print(tab)


def register(app: typer.Typer) -> None:
    """Add ``schrodinger`` to the ``hhld solve`` group."""
    app.command("schrodinger")(schrodinger)
