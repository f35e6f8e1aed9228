"""Comparing a Langevin ensemble with a grid density.

:func:`histogram_density` bins samples ``(N, d)`` onto the cells of a grid;
:func:`compare_ensemble` returns the L1 distance ``∫ |hist - rho|`` between that
histogram and a grid density, the ensemble's mass outside the box, and the expected L1
of pure sampling noise (``≈ sum_i sqrt(2 rho_i h^d / (pi N))`` for a multinomial
histogram of N samples drawn from ``rho`` itself), so a caller can tell
discretisation / dynamics errors from Monte-Carlo noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Grid

__all__ = ["histogram_density", "EnsembleComparison", "compare_ensemble"]


def histogram_density(grid: Grid, samples) -> tuple[np.ndarray, float]:
    """``(density, outside)``: samples binned on the grid's cells, normalised by the *total*
    number of samples (so mass outside the box is missing), and the fraction outside."""
    from .._backend import to_numpy

    x = np.asarray(to_numpy(samples), dtype=np.float64)
    if x.ndim == 1 and grid.dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != grid.dim:
        raise ValueError(f"samples must have shape (N, {grid.dim}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain non-finite values")
    counts, _ = np.histogramdd(x, bins=grid.edges)
    n = x.shape[0]
    inside = counts.sum()
    dens = counts / (n * grid.cell_volume)
    return dens, float(1.0 - inside / n)


@dataclass
class EnsembleComparison:
    l1: float
    outside: float
    noise_l1: float
    n_samples: int

    def as_dict(self) -> dict:
        return dict(l1=self.l1, outside=self.outside, noise_l1=self.noise_l1, n_samples=self.n_samples)


def compare_ensemble(grid: Grid, samples, rho: np.ndarray) -> EnsembleComparison:
    """L1 distance between the histogram of ``samples`` and the density ``rho`` (module docstring)."""
    dens, outside = histogram_density(grid, samples)
    r = np.asarray(rho, dtype=np.float64).reshape(grid.shape)
    v = grid.cell_volume
    n = len(samples)
    l1 = float(np.abs(dens - r).sum() * v) + outside
    noise = float(np.sum(np.sqrt(2.0 * np.clip(r, 0, None) * v * (1 - np.clip(r * v, 0, 1)) / (np.pi * n))))
    return EnsembleComparison(l1=l1, outside=outside, noise_l1=noise, n_samples=int(n))
