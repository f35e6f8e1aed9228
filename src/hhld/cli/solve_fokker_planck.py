"""``hhld solve fokker-planck``: the master equation of a landscape on a grid.

Writes to ``--out``: ``results.npz`` (times, snapshots, grid axes, Gibbs density,
spectrum, KL(t), entropy, free energy, entropy-production terms), ``summary.json``,
and figures: density snapshots, the low spectrum, KL(t) on a log scale, and an
animation (GIF with Pillow, else PNG frames).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer


def _parse_floats(text: Optional[str], name: str) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from exc


def _parse_box(text: Optional[str], dim: int):
    vals = _parse_floats(text, "--box")
    if vals is None:
        return None
    if len(vals) == 2:
        return [(vals[0], vals[1])] * dim
    if len(vals) != 2 * dim:
        raise typer.BadParameter(f"--box needs 2 or {2 * dim} numbers (lo,hi per axis), got {len(vals)}")
    return [(vals[2 * k], vals[2 * k + 1]) for k in range(dim)]


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


def run(landscape: str, cells: int, box: Optional[str], D: float, mu: float, t_end: float,
        snapshots: int, center: Optional[str], width: float, out: Path, seed: int, quiet: bool,
        k: int, method: str) -> dict:
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.progress import Progress

    from ..fokker_planck import FokkerPlanck
    from ..landscapes import get_landscape

    rng = np.random.default_rng(seed)  # only used for the default off-centre start
    land = get_landscape(landscape)
    fp = FokkerPlanck(land, box=_parse_box(box, land.dim), cells=cells, D=D, mu=mu)
    c = _parse_floats(center, "--center")
    if c is None:
        c = [0.5 * (lo + hi) + 0.25 * (hi - lo) * float(rng.uniform(-1, 1)) for lo, hi in fp.grid.box]
    if len(c) != land.dim:
        raise typer.BadParameter(f"--center needs {land.dim} numbers, got {len(c)}")
    rho0 = fp.gaussian(c, width)
    times = np.linspace(0.0, t_end, snapshots + 1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("evolving", total=len(times))
        snaps = fp.evolve(rho0, times, method=method, callback=lambda i, t: progress.advance(task))
        t_evolve = time.perf_counter() - t0
        task2 = progress.add_task("spectrum + functionals", total=len(times) + 1)
        spec = fp.spectrum(k)
        progress.advance(task2)
        kl, ent, fe, masses, eps = [], [], [], [], []
        for r in snaps:
            kl.append(fp.kl(r))
            ent.append(fp.entropy(r))
            fe.append(fp.free_energy(r))
            masses.append(fp.mass(r))
            eps.append(fp.entropy_production(r).as_dict())
            progress.advance(task2)
    stat = fp.stationary("solve")
    ep_keys = list(eps[0])
    np.savez_compressed(
        out / "results.npz", times=times, snapshots=snaps, gibbs=fp.gibbs(), stationary=stat,
        **{f"axis_{i}": a for i, a in enumerate(fp.grid.axes)}, rates=spec.rates, modes=spec.modes, kl=np.array(kl),
        entropy=np.array(ent), free_energy=np.array(fe), mass=np.array(masses),
        **{f"ep_{key}": np.array([e[key] for e in eps]) for key in ep_keys})
    summary = {
        "landscape": land.name, "dim": land.dim, "box": fp.grid.box, "cells": list(fp.grid.cells),
        "D": fp.D, "mu": fp.mu, "t_end": t_end, "snapshots": snapshots, "center": list(map(float, c)),
        "width": width, "seed": seed, "method": method,
        "rates": spec.rates.tolist(), "relaxation_rate": spec.relaxation_rate if k > 1 else None,
        "kl_final": kl[-1], "l1_final_vs_gibbs": fp.l1(snaps[-1]),
        "l1_stationary_solve_vs_gibbs": fp.l1(stat), "max_mass_error": float(np.max(np.abs(np.array(masses) - 1))),
        "min_density": float(snaps.min()), "evolve_seconds": t_evolve,
        "entropy_production_final": eps[-1],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    # figures
    nshow = min(6, len(times))
    idx = np.unique(np.linspace(0, len(times) - 1, nshow).round().astype(int))
    fig, axes = plt.subplots(1, len(idx), figsize=(3 * len(idx), 3), squeeze=False)
    for ax, i in zip(axes[0], idx):
        _show(ax, fp, snaps[i], f"t = {times[i]:.3g}")
    fig.tight_layout()
    fig.savefig(out / "density_snapshots.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(len(spec.rates)), spec.rates, "o")
    ax.set_xlabel("n")
    ax.set_ylabel("decay rate lambda_n")
    ax.set_title("low spectrum of the generator")
    fig.tight_layout()
    fig.savefig(out / "spectrum.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 3))
    kla = np.array(kl)
    pos = kla > 0
    ax.semilogy(times[pos], kla[pos], "-o", ms=3)
    ax.set_xlabel("t")
    ax.set_ylabel("KL(rho_t || rho*)")
    fig.tight_layout()
    fig.savefig(out / "kl.png", dpi=110)
    plt.close(fig)

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
        summary["animation"] = "density.gif"
    except ImportError:
        frames = out / "frames"
        frames.mkdir(exist_ok=True)
        for i in range(len(times)):
            fig, ax = plt.subplots(figsize=(4, 3.5))
            _show(ax, fp, snaps[i], f"t = {times[i]:.3g}")
            fig.savefig(frames / f"frame_{i:04d}.png", dpi=80)
            plt.close(fig)
        summary["animation"] = "frames/"
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def register(app: typer.Typer) -> None:
    """Add ``fokker-planck`` to the ``hhld solve`` group."""

    @app.command("fokker-planck")
    def fokker_planck(
        landscape: str = typer.Option("double_well_2d", "--landscape", "-l", help="landscape registry name"),
        cells: int = typer.Option(128, help="cells per axis"),
        box: Optional[str] = typer.Option(None, help="'lo,hi' (all axes) or 'lo1,hi1,lo2,hi2,...'; default: the landscape's box"),
        D: float = typer.Option(0.05, "--D", "-D", help="diffusion constant D > 0"),
        mu: float = typer.Option(1.0, help="mobility (1, or 1/eta for the documents' master equation)"),
        t_end: float = typer.Option(5.0, help="final time"),
        snapshots: int = typer.Option(20, help="number of equally spaced snapshots after t=0"),
        center: Optional[str] = typer.Option(None, help="initial Gaussian centre 'x1,x2,...' (default: random from --seed)"),
        width: float = typer.Option(0.1, help="initial Gaussian standard deviation"),
        k: int = typer.Option(6, help="number of eigenvalues of the spectrum"),
        method: str = typer.Option("auto", help="time integrator: auto (by ‖A‖·t), expm, chebyshev, cram, contour"),
        out: Path = typer.Option(Path("fp_out"), "--out", help="output directory"),
        seed: int = typer.Option(0, help="seed of the default initial centre"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar, no summary print"),
    ):
        """Solve the master equation d rho/dt = mu div(rho grad L) + D lap rho on a grid."""
        try:
            summary = run(landscape, cells, box, D, mu, t_end, snapshots, center, width, out, seed,
                          quiet, k, method)
        except (ValueError, TypeError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2)
        if not quiet:
            typer.echo(json.dumps({key: summary[key] for key in
                                   ("landscape", "cells", "D", "mu", "rates", "kl_final",
                                    "max_mass_error", "evolve_seconds")}, indent=1))
            typer.echo(f"wrote {out}/results.npz, summary.json and figures")
