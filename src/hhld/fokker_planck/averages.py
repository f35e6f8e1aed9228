"""Averages on a Fokker-Planck grid: ``E[f]``, ``Var[f]``, ``Cov[f, g]`` under the Gibbs density
(or any density on the grid), so that an exact stationary quantity -- Stein's product
``Cov(θ_i, ∂_iL) = D/μ``, ``E[C] = E|∇L|²/(D d)``, a variance -- is one call instead of
hand-written grid sums.

``f`` is a function of the cell centres ``(n, d) -> (n,)`` (or ``(n, k)`` for k quantities at
once, e.g. the gradient), or an array of values on the grid (``grid.shape`` or ``grid.shape +
(k,)``). Integrals are midpoint sums over the cells, like every functional of the grid; the
density is normalised on the grid first.
"""
from __future__ import annotations

import numpy as np

from .._backend import to_numpy

__all__ = ["expectation", "variance", "covariance"]


def _density(fp, rho) -> np.ndarray:
    if rho is None:
        w = np.asarray(fp.gibbs(), dtype=np.float64).ravel()
    else:
        w = np.asarray(rho, dtype=np.float64)
        if w.size != fp.grid.size:
            raise ValueError(f"rho must have the grid's shape {tuple(fp.grid.shape)}, got shape {w.shape}")
        w = w.ravel()
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("rho must be a density on the grid (finite, >= 0)")
    total = w.sum()
    if not total > 0:
        raise ValueError("rho has no mass on the grid")
    return w / total


def _values(fp, f, name: str) -> np.ndarray:
    n = fp.grid.size
    if callable(f):
        v = np.asarray(to_numpy(f(fp.grid.points())), dtype=np.float64)
    else:
        v = np.asarray(to_numpy(f), dtype=np.float64)
        if v.shape[: fp.grid.dim] == tuple(fp.grid.shape):
            v = v.reshape((n,) + v.shape[fp.grid.dim:])
    if v.ndim == 0 or v.shape[0] != n or v.ndim > 2:
        raise ValueError(f"{name} must give one value (or one row of k values) per cell: shape ({n},) or ({n}, k), "
                         f"got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} is not finite on every cell of the grid")
    return v


def _out(x):
    return float(x) if np.ndim(x) == 0 else np.asarray(x)


def expectation(fp, f, rho=None):
    """``E[f] = Σ_cells f ρ`` under the Gibbs density (``rho=None``) or ``rho``; a float, or an
    array ``(k,)`` for ``k`` quantities."""
    w = _density(fp, rho)
    return _out(np.tensordot(w, _values(fp, f, "f"), axes=(0, 0)))


def covariance(fp, f, g, rho=None):
    """``Cov[f, g] = E[(f − E f)(g − E g)]`` (element-wise for ``(n, k)`` quantities)."""
    w = _density(fp, rho)
    a, b = _values(fp, f, "f"), _values(fp, g, "g")
    if a.shape != b.shape:
        raise ValueError(f"f and g must give the same shape per cell, got {a.shape[1:]} and {b.shape[1:]}")
    da = a - np.tensordot(w, a, axes=(0, 0))
    db = b - np.tensordot(w, b, axes=(0, 0))
    return _out(np.tensordot(w, da * db, axes=(0, 0)))


def variance(fp, f, rho=None):
    """``Var[f] = Cov[f, f]``."""
    return covariance(fp, f, f, rho)
