"""Madelung (hydrodynamic) variables of a wave function, and the paper's (3.2)-(3.6).

Exact results (textbook; ``Psi = sqrt(rho) exp(i S / hbar)`` with ``rho > 0``):

* (3.4) velocity ``u = grad S / m = (hbar/m) grad arg Psi = (hbar/m) Im(conj(Psi) grad Psi) / |Psi|^2``
  (computed without phase unwrapping);
* (3.2) continuity ``d rho/dt = -div(u rho)``;
* (3.3) Euler ``du/dt = -(u.grad) u - (1/m) grad(V + Q)`` with the quantum potential
  ``Q = -(hbar^2 / 2m) lap sqrt(rho) / sqrt(rho)``.

The paper prints (3.3) with ``-(hbar^2/2m) sum_k d^2 sqrt(p)/dq_k^2`` *without* the division by
``sqrt(p)`` (its (2.14) has it); :func:`quantum_potential` computes the exact ``Q`` by default and
the printed form with ``form="paper"`` so that the difference can be measured.

* (3.6) ``Psi = sqrt(p) exp(i F eps / hbar)`` from a density ``p`` and the free energy ``F``
  (the paper's identification ``S = eps F``); :func:`free_energy_from_psi` inverts it on the
  principal branch: ``F`` is recovered only modulo ``2 pi hbar / eps``, which is the paper's
  multivaluedness (3.7) with ``mu = 2 pi hbar / eps`` (3.12).

Derivatives of ``Psi`` and ``sqrt(rho)`` are spectral (FFT; use states that vanish at the box
edges); the gradients of the non-periodic fields ``u``, ``V``, ``Q`` are 4th-order finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_positive
from .grid import Grid
from .schrodinger import SplitStepSolver, potential_on_grid

__all__ = ["spectral_gradient", "fd_gradient", "spectral_laplacian", "to_madelung", "from_madelung", "quantum_potential",
           "psi_from_density_free_energy", "free_energy_from_psi", "madelung_residuals", "MadelungResiduals"]


def spectral_gradient(grid: Grid, f) -> np.ndarray:
    """``grad f`` by FFT, shape ``(d, *grid.shape)`` (complex in, complex out)."""
    fk = np.fft.fftn(f)
    out = np.stack([np.fft.ifftn(1j * k * fk) for k in grid.k_mesh()])
    return out if np.iscomplexobj(f) else out.real


def fd_gradient(grid: Grid, f) -> np.ndarray:
    """``grad f`` by 4th-order central differences (2nd order in the two outer cells), shape
    ``(d, *grid.shape)``: local, so fields that are not periodic (``V``, ``u``, ``Q``) do not
    ring as they would under the FFT."""
    f = np.asarray(f)
    out = []
    for k, dx in enumerate(grid.dx):
        g = np.gradient(f, dx, axis=k, edge_order=2)
        n = f.shape[k]
        sl = lambda a, b: tuple(slice(a, b) if j == k else slice(None) for j in range(f.ndim))  # noqa: E731
        g[sl(2, n - 2)] = (-f[sl(4, n)] + 8 * f[sl(3, n - 1)] - 8 * f[sl(1, n - 3)] + f[sl(0, n - 4)]) / (12 * dx)
        out.append(g)
    return np.stack(out)


def spectral_laplacian(grid: Grid, f) -> np.ndarray:
    out = np.fft.ifftn(-grid.k_squared() * np.fft.fftn(f))
    return out if np.iscomplexobj(f) else out.real


def to_madelung(grid: Grid, psi, hbar: float = 1.0, m: float = 1.0, *, floor: float = 1e-300):
    """``(rho, u)`` with ``rho = |Psi|^2`` and ``u = (hbar/m) Im(conj(Psi) grad Psi)/rho``
    (shape ``(d, *grid.shape)``; set to 0 where ``rho <= floor``)."""
    psi = np.asarray(psi)
    rho = np.abs(psi) ** 2
    j = (hbar / m) * np.imag(np.conj(psi)[None] * spectral_gradient(grid, psi.astype(np.complex128)))
    u = np.where(rho > floor, j / np.maximum(rho, floor), 0.0)
    return rho, u


def from_madelung(rho, S, hbar: float = 1.0) -> np.ndarray:
    """``Psi = sqrt(rho) exp(i S / hbar)`` (``S`` the phase function, ``u = grad S / m``)."""
    rho = np.asarray(rho, dtype=np.float64)
    if np.any(rho < 0):
        raise ValueError("rho must be >= 0")
    return np.sqrt(rho) * np.exp(1j * np.asarray(S, dtype=np.float64) / check_positive("hbar", hbar))


def psi_from_density_free_energy(p, F, epsilon: float, hbar: float) -> np.ndarray:
    """(3.6) ``Psi = sqrt(p) exp(i F eps / hbar)`` (the paper's definition)."""
    return from_madelung(p, check_positive("epsilon", epsilon) * np.asarray(F, dtype=np.float64), hbar)


def free_energy_from_psi(psi, epsilon: float, hbar: float) -> np.ndarray:
    """``F = hbar arg(Psi) / eps`` on the principal branch (defined modulo ``2 pi hbar / eps``)."""
    return check_positive("hbar", hbar) * np.angle(psi) / check_positive("epsilon", epsilon)


def quantum_potential(grid: Grid, rho, hbar: float = 1.0, m: float = 1.0, *, form: str = "exact",
                      floor: float = 1e-300) -> np.ndarray:
    """``Q = -(hbar^2/2m) lap sqrt(rho) / sqrt(rho)`` (exact, ``form="exact"``) or the paper's
    printed ``-(hbar^2/2m) lap sqrt(rho)`` in (3.3) (``form="paper"``)."""
    s = np.sqrt(np.asarray(rho, dtype=np.float64))
    lap = spectral_laplacian(grid, s)
    c = -(hbar * hbar) / (2.0 * m)
    if form == "paper":
        return c * lap
    if form != "exact":
        raise ValueError(f"form must be 'exact' or 'paper', got {form!r}")
    return np.where(s > np.sqrt(floor), c * lap / np.maximum(s, np.sqrt(floor)), 0.0)


@dataclass
class MadelungResiduals:
    continuity: float        # ||d rho/dt + div(u rho)|| / ||d rho/dt||           (3.2)
    euler: float             # rho-weighted ||du/dt + (u.grad)u + grad(V+Q)/m|| / ||du/dt||   (3.3)
    euler_paper_form: float  # the same with the paper's printed Q (no 1/sqrt(rho))
    drho_dt_scale: float
    du_dt_scale: float


def madelung_residuals(grid: Grid, potential, psi0, hbar: float = 1.0, m: float = 1.0, *,
                       t: float = 0.5, dt: float = 1e-4, rel_floor: float = 1e-6) -> MadelungResiduals:
    """Evolve ``psi0`` to ``t`` with the split-step solver, take the states at ``t - dt, t, t + dt``
    (steps of ``dt/4``) and measure how well (3.2) and (3.3) hold, with central time differences
    (error ``O(dt^2)``) and spectral space derivatives. Norms are L2 over the cells where
    ``rho > rel_floor * max rho``, weighted by ``rho`` for (3.3)."""
    V = potential_on_grid(grid, potential)
    solver = SplitStepSolver(grid, V, hbar, m, dt=dt / 4)
    psi_a = solver.step(psi0, int(round((t - dt) / (dt / 4)))) if t > dt else None
    if psi_a is None:
        raise ValueError("t must be larger than dt")
    psi_b = solver.step(psi_a, 4)
    psi_c = solver.step(psi_b, 4)
    rho_a, u_a = to_madelung(grid, psi_a, hbar, m)
    rho_b, u_b = to_madelung(grid, psi_b, hbar, m)
    rho_c, u_c = to_madelung(grid, psi_c, hbar, m)
    mask = rho_b > rel_floor * rho_b.max()
    drho = (rho_c - rho_a) / (2 * dt)
    flux = u_b * rho_b[None]
    div = sum(spectral_gradient(grid, flux[k])[k] for k in range(grid.dim))
    r1 = drho + div
    cont = float(np.linalg.norm(r1[mask]) / np.linalg.norm(drho[mask]))
    du = (u_c - u_a) / (2 * dt)
    grads_u = [fd_gradient(grid, u_b[j]) for j in range(grid.dim)]  # grads_u[j][k] = d_k u_j
    adv = np.stack([sum(u_b[k] * grads_u[j][k] for k in range(grid.dim)) for j in range(grid.dim)])
    w = np.sqrt(rho_b) * mask

    def euler_with(Q):
        force = fd_gradient(grid, V + Q) / m
        r = du + adv + force
        return float(np.linalg.norm((r * w[None]).ravel()) / np.linalg.norm((du * w[None]).ravel()))

    e_exact = euler_with(quantum_potential(grid, rho_b, hbar, m))
    e_paper = euler_with(quantum_potential(grid, rho_b, hbar, m, form="paper"))
    return MadelungResiduals(cont, e_exact, e_paper, float(np.linalg.norm(drho[mask])),
                             float(np.linalg.norm((du * w[None]).ravel())))
