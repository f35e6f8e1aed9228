"""The vector-potential form (4.10)-(4.13) and its gauge-covariant lattice discretisation.

Paper: with ``Omega = Omega_0(q) + Omega_1(t, q)`` (4.10), ``Psi~ = sqrt(p) exp(i Omega_1 eps/hbar)``
(4.11) and ``A_k = (eps/e) dOmega_0/dq_k`` (4.12), the Schrodinger equation becomes (4.13)

    -i hbar dPsi~/dt = [ (hbar^2/2m) (d_k + i e A_k/hbar)(d_k + i e A_k/hbar) - V ] Psi~.

Exact result: since ``A`` is a pure gradient, (4.13) is the gauge transform of (3.5):
``Psi = Psi~ exp(i eps Omega_0 / hbar)`` solves the plain equation iff ``Psi~`` solves (4.13)
(no magnetic field, ``curl A = 0``; the densities agree).

Lattice (Peierls) form: each link ``a -> b = a + e_k`` of the grid carries the phase
``theta_ab = (e/hbar) int_a^b A . dq``; the hopping term of ``-(hbar^2/2m) lap`` becomes
``-(hbar^2/2m dx^2) exp(i theta_ab) Psi~_b``. With ``theta_ab = eps (Omega_0(b) - Omega_0(a))/hbar``
(:func:`link_phases_from_omega`), ``H~ = U^dagger H U`` with ``U = diag(exp(i eps Omega_0/hbar))``
holds *exactly* on the grid, so the two evolutions agree to round-off. With only ``A`` on the
nodes (:func:`link_phases_from_field`, trapezoid rule) the agreement is ``O(dx^2)``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._validation import check_positive
from .grid import Grid
from .schrodinger import potential_on_grid

__all__ = ["vector_potential", "link_phases_from_omega", "link_phases_from_field", "gauge_hamiltonian",
           "plain_hamiltonian", "gauge_factor", "evolve_sparse"]


def _pairs(grid: Grid):
    idx = np.arange(grid.size).reshape(grid.shape)
    for k in range(grid.dim):
        a = np.take(idx, np.arange(grid.shape[k] - 1), axis=k).ravel()
        b = np.take(idx, np.arange(1, grid.shape[k]), axis=k).ravel()
        yield k, a, b, float(grid.dx[k])


def vector_potential(grid: Grid, omega0, epsilon: float, e: float = 1.0) -> np.ndarray:
    """(4.12) ``A_k = (eps/e) dOmega_0/dq_k`` on the nodes, shape ``(d, *grid.shape)``.
    ``omega0``: a Landscape (its gradient is used) or an array (central differences)."""
    check_positive("epsilon", epsilon)
    if hasattr(omega0, "grad"):
        g = grid.evaluate_grad(omega0)
    else:
        g = np.stack(np.gradient(np.asarray(omega0, dtype=np.float64), *grid.dx, edge_order=2)) \
            if grid.dim > 1 else np.gradient(np.asarray(omega0, dtype=np.float64), grid.dx[0], edge_order=2)[None]
    return (epsilon / e) * g


def link_phases_from_omega(grid: Grid, omega0, epsilon: float, hbar: float) -> list[np.ndarray]:
    """Exact link phases ``eps (Omega_0(b) - Omega_0(a)) / hbar`` per axis (one array per axis,
    in the order of the neighbour pairs)."""
    om = potential_on_grid(grid, omega0).ravel()
    return [epsilon * (om[b] - om[a]) / hbar for _, a, b, _ in _pairs(grid)]


def link_phases_from_field(grid: Grid, A, e: float, hbar: float) -> list[np.ndarray]:
    """Link phases ``(e/hbar) dx (A_k(a) + A_k(b)) / 2`` (trapezoid, ``O(dx^3)`` per link)."""
    A = np.asarray(A, dtype=np.float64).reshape(grid.dim, -1)
    return [e * dx * 0.5 * (A[k][a] + A[k][b]) / hbar for k, a, b, dx in _pairs(grid)]


def gauge_hamiltonian(grid: Grid, potential, phases, hbar: float = 1.0, m: float = 1.0) -> sp.csr_matrix:
    """``H~`` of (4.13) on the grid (Dirichlet walls, 3-point stencil with Peierls phases)."""
    V = potential_on_grid(grid, potential).ravel()
    rows, cols, vals = [], [], []
    diag = V.astype(np.complex128).copy()
    for (k, a, b, dx), th in zip(_pairs(grid), phases):
        c = hbar * hbar / (2.0 * m * dx * dx)
        rows += [a, b]
        cols += [b, a]
        vals += [-c * np.exp(1j * th), -c * np.exp(-1j * th)]
        diag += 2.0 * c  # both neighbours of every node along this axis (Dirichlet: ghost = 0)
    rows.append(np.arange(grid.size))
    cols.append(np.arange(grid.size))
    vals.append(diag)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(grid.size, grid.size))


def plain_hamiltonian(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0) -> sp.csr_matrix:
    """The same stencil without phases (``A = 0``): the plain (3.5)."""
    zero = [np.zeros(a.size) for _, a, _, _ in _pairs(grid)]
    return gauge_hamiltonian(grid, potential, zero, hbar, m)


def gauge_factor(grid: Grid, omega0, epsilon: float, hbar: float) -> np.ndarray:
    """``exp(i eps Omega_0 / hbar)`` on the grid: ``Psi = gauge_factor * Psi~``."""
    return np.exp(1j * epsilon * potential_on_grid(grid, omega0) / hbar)


def evolve_sparse(H: sp.spmatrix, psi0, t: float, hbar: float = 1.0) -> np.ndarray:
    """``exp(-i t H / hbar) psi0`` by ``scipy.sparse.linalg.expm_multiply``."""
    shape = np.shape(psi0)
    out = spla.expm_multiply((-1j * t / hbar) * H.tocsc(), np.asarray(psi0, dtype=np.complex128).ravel())
    return out.reshape(shape)
