"""The stationary state: the exact discrete Gibbs density and the sparse null-vector solve.

For the Scharfetter-Gummel generator the discrete stationary state is exactly
``rho*_i = exp(-U_i) / Z``, ``U = mu L / D``, ``Z = sum_i exp(-U_i) h^d`` (see
:mod:`hhld.fokker_planck.operator`). :func:`stationary_solve` finds it independently
as the null vector of the sparse generator (one equation replaced by the
normalisation), which is what the tests compare with the closed form.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .grid import Grid

__all__ = ["gibbs_density", "stationary_solve"]


def gibbs_density(grid: Grid, U: np.ndarray) -> np.ndarray:
    """``exp(-U) / Z`` on the grid (shape ``grid.shape``), shifted by ``min U`` so that
    it never overflows; cells far above the minimum may underflow to 0."""
    U = np.asarray(U, dtype=np.float64).reshape(grid.shape)
    w = np.exp(-(U - U.min()))
    return (w / grid.integrate(w)).astype(grid.dtype, copy=False)


def stationary_solve(A: sp.spmatrix, grid: Grid, U: np.ndarray | None = None,
                     anchor: int | None = None) -> np.ndarray:
    """Null vector of the generator ``A`` by one sparse LU solve.

    ``A rho = 0`` is made regular by fixing ``rho[anchor] = 1`` (default anchor: the cell
    of lowest ``U`` when ``U`` is given, else the centre cell) and dropping that cell's row;
    the reduced system ``A_rr rho_r = -A_r,anchor`` is solved with SuperLU, then ``rho``
    is normalised to ``sum(rho) h^d = 1``. Round-off negatives are clipped to 0.

    Anchoring far from the mass (where ``exp(-U)`` underflows) makes the reduced system
    useless, hence the default. For metastable landscapes (a tiny first eigenvalue) the
    solve is ill-conditioned and agrees with the closed form only to about
    ``eps / lambda_1``-ish accuracy (1e-6 in L1 for the 2-D double well at D = 0.05).
    """
    n = grid.size
    A = sp.csc_matrix(A, dtype=np.float64)
    if anchor is None:
        anchor = int(np.argmin(np.asarray(U).ravel())) if U is not None else n // 2
    keep = np.ones(n, dtype=bool)
    keep[anchor] = False
    Ar = A[keep][:, keep]
    b = -A[keep][:, [anchor]].toarray().ravel()
    rest = spla.spsolve(sp.csc_matrix(Ar), b, permc_spec="MMD_AT_PLUS_A")
    rho = np.empty(n)
    rho[keep] = rest
    rho[anchor] = 1.0
    rho = np.clip(rho, 0.0, None)
    rho = rho / (rho.sum() * grid.cell_volume)
    return rho.reshape(grid.shape).astype(grid.dtype, copy=False)
