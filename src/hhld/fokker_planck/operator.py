r"""The Scharfetter-Gummel finite-volume generator of the master equation.

The master equation (documents' HHLE with mobility ``mu``; ``mu = 1/eta`` is the
documents' form, ``mu = 1`` the reference code's drift)

.. math::  \partial_t \rho = \nabla\cdot\big(\mu \rho \nabla L + D \nabla \rho\big)
           = -\nabla\cdot J, \qquad J = -D\,(\nabla\rho + \rho\,\nabla U),\quad U = \mu L / D,

is written as a conservation law over the cells of a :class:`~hhld.fokker_planck.grid.Grid`.
Across the face between neighbouring cells ``i`` and ``j = i + e_k`` the
Scharfetter-Gummel flux (exact for a linear ``U`` between the two centres) is

.. math::  J_{i\to j} = \frac{D}{h_k}\big[B(\Delta U)\,\rho_i - B(-\Delta U)\,\rho_j\big],
           \qquad \Delta U = U_j - U_i,\qquad B(x) = \frac{x}{e^x - 1},

so that ``d rho_i / dt = -sum_k (J_{k,i+1/2} - J_{k,i-1/2}) / h_k`` with ``J = 0`` on the
box faces (no-flux boundaries). This is a continuous-time Markov jump process with rates
``r(i -> j) = (D/h_k^2) B(Delta U)``, ``r(j -> i) = (D/h_k^2) B(-Delta U)``, and because
``B(-x) = e^x B(x)`` the rates satisfy detailed balance with respect to
``pi_i = exp(-U_i)``:

* the discrete stationary state is *exactly* the Gibbs density ``exp(-mu L / D)``
  sampled at the cell centres (the flux of ``pi`` vanishes face by face);
* the column sums of the generator are zero, so mass ``sum(rho) * h^d`` is conserved
  to round-off;
* the off-diagonal entries are ``>= 0`` (an M-matrix), so ``exp(t A)`` and implicit
  steps keep ``rho >= 0``;
* ``S = G^{-1/2} A G^{1/2}`` with ``G = diag(pi)`` is symmetric, with off-diagonal
  entries ``(D/h^2) (Delta U / 2) / sinh(Delta U / 2)`` (built directly, without
  ever forming ``pi^{-1/2}``, which can overflow).

:func:`reference_rhs` is a plain loop over faces of the same formula, used only by the
tests to check the fast sparse matrix of :func:`build_generator`.
"""
from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from .grid import Grid

__all__ = ["bernoulli", "build_generator", "build_symmetric", "reference_rhs", "face_pairs", "face_rates", "SCHEMES"]


def bernoulli(x: np.ndarray) -> np.ndarray:
    """``B(x) = x / (e^x - 1)`` with ``B(0) = 1``, accurate for small ``|x|`` and
    without overflow for large ``|x|`` (``B(x) -> 0`` for ``x -> +inf``,
    ``B(x) ~ -x`` for ``x -> -inf``)."""
    x = np.asarray(x)
    out = np.empty_like(x, dtype=np.result_type(x, np.float64))
    small = np.abs(x) < 1e-5
    xs = x[small]
    out[small] = 1.0 - xs / 2.0 + xs * xs / 12.0
    xl = x[~small]
    with np.errstate(over="ignore"):
        out[~small] = xl / np.expm1(xl)
    return out.astype(x.dtype, copy=False) if np.issubdtype(x.dtype, np.floating) else out


def _xsinh(x: np.ndarray) -> np.ndarray:
    """``(x/2) / sinh(x/2)`` (the symmetrised SG rate), ``1`` at 0, no overflow."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    out = np.empty_like(x)
    small = x < 1e-5
    out[small] = 1.0 - x[small] ** 2 / 24.0
    xl = x[~small]
    # (x/2)/sinh(x/2) = x * e^{-x/2} / (1 - e^{-x})
    out[~small] = xl * np.exp(-xl / 2.0) / (-np.expm1(-xl))
    return out


def face_pairs(grid: Grid, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices ``(i, j)`` of all neighbouring cell pairs ``j = i + e_axis``."""
    idx = np.arange(grid.size).reshape(grid.shape)
    lo = [slice(None)] * grid.dim
    hi = [slice(None)] * grid.dim
    lo[axis] = slice(0, -1)
    hi[axis] = slice(1, None)
    return idx[tuple(lo)].ravel(), idx[tuple(hi)].ravel()


SCHEMES = ("sg", "sqra")


def _face_factors(dU: np.ndarray, scheme: str):
    """``(B(dU), B(-dU), symmetric)`` of one flux scheme on faces with potential jump ``dU``:
    the forward and backward rate factors and the symmetrised off-diagonal factor
    ``sqrt(B(dU) B(-dU))``."""
    if scheme == "sg":  # Scharfetter-Gummel: B(x) = x / (e^x - 1), symmetric (x/2) / sinh(x/2)
        return bernoulli(dU), bernoulli(-dU), _xsinh(dU)
    if scheme == "sqra":  # square-root approximation: exp(-x/2), exp(x/2), symmetric 1
        return np.exp(-dU / 2.0), np.exp(dU / 2.0), np.ones_like(dU)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def face_rates(grid: Grid, U: np.ndarray, D: float, scheme: str = "sg") -> list[tuple[np.ndarray, ...]]:
    """Per axis, the jump rates on every interior face: a list of ``(i, j, r_ij, r_ji)`` with flat
    cell indices ``i`` (left) and ``j`` (right neighbour), ``r_ij = (D/h^2) B(U_j - U_i)`` (i -> j)
    and ``r_ji = (D/h^2) B(U_i - U_j)`` (j -> i); ``B`` is the Bernoulli function for ``"sg"``
    (Scharfetter-Gummel) and ``exp(-x/2)`` for ``"sqra"`` (the square-root approximation)."""
    return [(i, j, c * f, c * b) for i, j, c, f, b, _ in _faces(grid, U, D, scheme)]


def _faces(grid: Grid, U, D: float, scheme: str):
    Uf = np.asarray(U, dtype=np.float64).ravel()
    out = []
    for k in range(grid.dim):
        i, j = face_pairs(grid, k)
        fwd, bwd, sym = _face_factors(Uf[j] - Uf[i], scheme)
        out.append((i, j, D / grid.h[k] ** 2, fwd, bwd, sym))
    return out


def _assemble(n: int, rows: list, cols: list, vals: list, out_rate: np.ndarray) -> sp.csr_matrix:
    """CSR matrix from off-diagonal triplets, with diagonal ``-out_rate`` (zero column sums for
    the generator)."""
    rows = rows + [np.arange(n)]
    cols = cols + [np.arange(n)]
    vals = vals + [-out_rate]
    M = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    M.sum_duplicates()
    return M


def _operator(grid: Grid, U, D: float, scheme: str, symmetric: bool) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    out_rate = np.zeros(grid.size)
    for i, j, c, fwd, bwd, sym in _faces(grid, U, D, scheme):
        rows += [j, i]
        cols += [i, j]
        vals += [c * sym, c * sym] if symmetric else [c * fwd, c * bwd]
        np.add.at(out_rate, i, c * fwd)
        np.add.at(out_rate, j, c * bwd)
    return _assemble(grid.size, rows, cols, vals, out_rate)


def build_generator(grid: Grid, U: np.ndarray, D: float, dtype=None, scheme: str = "sg") -> sp.csr_matrix:
    """The sparse generator ``A`` (``d rho / dt = A @ rho`` on flat densities).

    ``U`` is the dimensionless potential ``mu * L / D`` on the cell centres (shape
    ``grid.shape``); ``D > 0`` the diffusion constant; ``scheme`` the face flux: ``"sg"``
    (Scharfetter-Gummel, the default: exact for a linear ``U`` between centres) or ``"sqra"``
    (square-root approximation, rates ``(D/h^2) exp(-(U_j - U_i)/2)``: its symmetrised form is
    the grid Laplacian plus a diagonal potential, the exact discrete Schrodinger image used by
    :mod:`hhld.quantum.fp_map`). Both satisfy detailed balance with ``exp(-U)``. Returns a CSR
    matrix of size ``grid.size`` with zero column sums (the diagonal is minus the column sum of
    the off-diagonal rates, so mass conservation holds to round-off).
    """
    dtype = np.dtype(dtype or grid.dtype)
    return _operator(grid, U, D, scheme, symmetric=False).astype(dtype)


def build_symmetric(grid: Grid, U: np.ndarray, D: float, scheme: str = "sg") -> sp.csr_matrix:
    """The symmetrised generator ``S = G^{-1/2} A G^{1/2}``, ``G = diag(exp(-U))``.

    Same spectrum as ``A``; its eigenvector for eigenvalue 0 is ``sqrt(pi)``, and an
    eigenvector ``v`` of ``S`` gives the density eigenvector ``sqrt(pi) * v`` of ``A``.
    Off-diagonals ``(D/h^2) sqrt(B(dU) B(-dU))`` (``(dU/2)/sinh(dU/2)`` for ``"sg"``, 1 for
    ``"sqra"``), built without ever forming ``pi^{-1/2}``; diagonal equal to that of ``A``.
    ``-S`` is the Schrodinger operator of the Fokker-Planck <-> Schrodinger map.
    """
    return _operator(grid, U, D, scheme, symmetric=True)


def reference_rhs(grid: Grid, U: np.ndarray, D: float, rho: np.ndarray) -> np.ndarray:
    """``d rho / dt`` by an explicit loop over all interior faces (readable, slow).

    For every cell ``i`` and axis ``k`` with a right neighbour ``j``: the SG flux
    ``J = (D/h) [B(U_j - U_i) rho_i - B(U_i - U_j) rho_j]`` leaves ``i`` and enters ``j``,
    each change divided by the cell width ``h``. Boundary faces carry no flux.
    """
    U = np.asarray(U, dtype=np.float64).reshape(grid.shape)
    rho = np.asarray(rho, dtype=np.float64).reshape(grid.shape)
    out = np.zeros(grid.shape)
    for i in itertools.product(*(range(n) for n in grid.shape)):
        for k in range(grid.dim):
            if i[k] + 1 >= grid.shape[k]:
                continue  # no-flux face on the box boundary
            j = list(i)
            j[k] += 1
            j = tuple(j)
            h = float(grid.h[k])
            dU = float(U[j] - U[i])
            B_plus = 1.0 if dU == 0 else dU / np.expm1(dU)
            B_minus = 1.0 if dU == 0 else -dU / np.expm1(-dU)
            flux = D / h * (B_plus * rho[i] - B_minus * rho[j])
            out[i] -= flux / h
            out[j] += flux / h
    return out
