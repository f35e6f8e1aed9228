"""Stationary states: low eigenpairs of ``H = -(hbar^2/2m) lap + V`` on a grid.

``H`` is a sparse finite-difference matrix (Kronecker sums of 1-D stencils):

* ``order=2``: the 3-point Laplacian, error ``O(dx^2)``;
* ``order=4``: the 5-point Laplacian, error ``O(dx^4)`` (for smooth states);
* ``bc="dirichlet"`` (``psi = 0`` outside the box) or ``"periodic"``.

Eigenpairs come from ``scipy.sparse.linalg.eigsh`` in shift-invert mode about a point
just below ``min V``, so the lowest ``k`` are found in a few iterations. The stationary
Schrodinger equation ``H psi = E psi`` is exact; its discretisation error is the
stencil's.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._validation import check_choice, check_int, check_positive, check_real
from .grid import Grid
from .schrodinger import potential_on_grid

__all__ = ["second_derivative_1d", "laplacian_matrix", "hamiltonian_matrix", "eigenstates"]


def second_derivative_1d(n: int, dx: float, bc: str = "dirichlet", order: int = 2) -> sp.csr_matrix:
    """The 1-D second-derivative stencil as an ``(n, n)`` sparse matrix."""
    check_choice("bc", bc, ("dirichlet", "periodic"))
    check_choice("order", order, (2, 4))
    if order == 2:
        offs, coefs = [-1, 0, 1], [1.0, -2.0, 1.0]
    else:
        offs, coefs = [-2, -1, 0, 1, 2], [-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12]
    diags = [np.full(n - abs(o), c) for o, c in zip(offs, coefs)]
    A = sp.diags(diags, offs, shape=(n, n), format="lil")
    if bc == "periodic":
        for o, c in zip(offs, coefs):
            if o > 0:
                for i in range(o):  # wrap-around entries (at most 2 per offset)
                    A[n - o + i, i] += c
                    A[i, n - o + i] += c
    return (A.tocsr() / (dx * dx)).tocsr()


def laplacian_matrix(grid: Grid, bc: str = "dirichlet", order: int = 2) -> sp.csr_matrix:
    """The grid Laplacian (C order, matching ``psi.ravel()``) as a Kronecker sum."""
    mats = [second_derivative_1d(n, dx, bc, order) for n, dx in zip(grid.shape, grid.dx)]
    L = sp.csr_matrix((grid.size, grid.size))
    for k, Dk in enumerate(mats):
        left = sp.identity(int(np.prod(grid.shape[:k])), format="csr")
        right = sp.identity(int(np.prod(grid.shape[k + 1:])), format="csr")
        L = L + sp.kron(sp.kron(left, Dk), right, format="csr")
    return L.tocsr()


def hamiltonian_matrix(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, *,
                       bc: str = "dirichlet", order: int = 2) -> sp.csr_matrix:
    """``H = -(hbar^2/2m) lap_h + diag(V)`` (real symmetric, sparse)."""
    hbar = check_positive("hbar", hbar)
    m = check_positive("m", m)
    V = potential_on_grid(grid, potential)
    return (-(hbar * hbar / (2.0 * m)) * laplacian_matrix(grid, bc, order) + sp.diags(V.ravel())).tocsr()


def eigenstates(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, k: int = 6, *,
                bc: str = "dirichlet", order: int = 2, sigma: float | None = None):
    """The ``k`` lowest eigenpairs of ``H``.

    Returns ``(E, psi)``: ``E`` ascending ``(k,)``, ``psi`` of shape ``(k, *grid.shape)``,
    each normalised so that ``sum |psi|^2 dV = 1`` and with a real positive largest entry.
    """
    k = check_int("k", k, minimum=1)
    if sigma is not None:
        check_real("sigma", sigma)
    if k >= grid.size - 1:
        raise ValueError(f"k={k} must be smaller than the number of grid points - 1 ({grid.size - 1})")
    V = potential_on_grid(grid, potential)
    H = hamiltonian_matrix(grid, V, hbar, m, bc=bc, order=order)
    if grid.size <= 600:
        E, vec = np.linalg.eigh(H.toarray())
        E, vec = E[:k], vec[:, :k]
    else:
        s = float(V.min()) - 1e-3 * (1.0 + abs(float(V.min()))) if sigma is None else float(sigma)
        v0 = np.random.default_rng(0).standard_normal(H.shape[0])  # fixed start: the same result every run
        E, vec = spla.eigsh(H, k=k, sigma=s, which="LM", tol=1e-13, v0=v0)
        idx = np.argsort(E)
        E, vec = E[idx], vec[:, idx]
    psi = vec.T.reshape(k, *grid.shape) / np.sqrt(grid.dV)
    flat = psi.reshape(k, -1)
    j = np.argmax(np.abs(flat), axis=1)
    signs = np.sign(flat[np.arange(k), j])
    psi = psi * signs.reshape(k, *([1] * grid.dim))
    return E, psi
