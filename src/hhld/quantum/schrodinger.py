"""Time-dependent Schrodinger equation by the split-step Fourier method (1-3 D).

The paper's (3.5), ``-i hbar dPsi/dt = (hbar^2/(2m) lap - V) Psi``, i.e. the usual
``i hbar dPsi/dt = H Psi`` with ``H = -(hbar^2/2m) lap + V``.

Strang splitting on the periodic box of a :class:`~hhld.quantum.grid.Grid`::

    Psi(t + dt) = exp(-i V dt / 2hbar) F^-1 exp(-i hbar k^2 dt / 2m) F exp(-i V dt / 2hbar) Psi(t)

Every factor is a pure phase and the FFT is used with ``norm="ortho"``, so each step is
unitary: the norm is kept to round-off (an exact property of the scheme, not of the
continuum equation; the time-discretisation error of the state is O(dt^2)).

``imaginary_time_ground_state`` runs the same splitting with ``t -> -i tau`` and
renormalises each step: it converges to the ground state of the split operator
(O(dtau^2) from the ground state of ``H``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._validation import check_int, check_positive
from .grid import Grid

__all__ = ["SplitStepSolver", "potential_on_grid", "SchrodingerResult", "imaginary_time_ground_state",
           "energy"]


def potential_on_grid(grid: Grid, potential) -> np.ndarray:
    """``V`` on the grid from a Landscape (any object with ``value``), a callable of the
    mesh arrays ``V(x, y, ...)``, or an array of ``grid.shape``."""
    if hasattr(potential, "value") and hasattr(potential, "dim"):
        return grid.evaluate(potential)
    if callable(potential):
        v = np.asarray(potential(*grid.mesh()), dtype=np.float64)
        v = np.broadcast_to(v, grid.shape).copy()
    else:
        v = np.asarray(potential)
        if v.shape != grid.shape:
            raise ValueError(f"potential array has shape {v.shape}, grid has shape {grid.shape}")
        if np.iscomplexobj(v):
            raise TypeError("potential must be real (a Hermitian Hamiltonian)")
    if not np.all(np.isfinite(v)):
        raise ValueError("potential has non-finite values on the grid")
    return v


def _fftn(a):
    return np.fft.fftn(a, norm="ortho")


def _ifftn(a):
    return np.fft.ifftn(a, norm="ortho")


def energy(grid: Grid, psi, V, hbar: float = 1.0, m: float = 1.0) -> float:
    """``<psi|H|psi> / <psi|psi>`` with the spectral kinetic energy."""
    phik = _fftn(psi)
    kin = hbar ** 2 / (2 * m) * np.sum(grid.k_squared() * np.abs(phik) ** 2)
    pot = np.sum(V * np.abs(psi) ** 2)
    return float((kin + pot) / np.sum(np.abs(psi) ** 2))


@dataclass
class SchrodingerResult:
    times: np.ndarray
    snapshots: np.ndarray  # (n_snap, *grid.shape)
    norms: np.ndarray
    energies: np.ndarray
    psi: np.ndarray  # final state
    meta: dict = field(default_factory=dict)


class SplitStepSolver:
    """Split-step Fourier propagator for ``i hbar dPsi/dt = (-(hbar^2/2m) lap + V) Psi``.

    ``potential``: a Landscape, a callable of the mesh, or an array (see
    :func:`potential_on_grid`). The dtype of the state is kept (complex128 default,
    complex64 allowed).
    """

    def __init__(self, grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, dt: float = 1e-3):
        self.grid = grid
        self.hbar = check_positive("hbar", hbar)
        self.m = check_positive("m", m)
        self.dt = check_positive("dt", dt)
        self.V = potential_on_grid(grid, potential)
        self._k2 = grid.k_squared()
        self._cache: dict = {}

    def _phases(self, dt: float, dtype):
        key = (float(dt), np.dtype(dtype).str)
        if key not in self._cache:
            half_v = np.exp(-0.5j * self.V * dt / self.hbar).astype(dtype)
            kin = np.exp(-0.5j * self.hbar * self._k2 * dt / self.m).astype(dtype)
            self._cache = {key: (half_v, kin)}
        return self._cache[key]

    def step(self, psi, n: int = 1, dt: float | None = None):
        """``n`` Strang steps of size ``dt`` (default ``self.dt``); returns a new array."""
        dt = self.dt if dt is None else dt
        psi = np.asarray(psi)
        if not np.iscomplexobj(psi):
            psi = psi.astype(np.complex128)
        half_v, kin = self._phases(dt, psi.dtype)
        out = psi * half_v
        for i in range(n):
            out = _ifftn(_fftn(out) * kin)
            # fuse the two half potential steps between consecutive steps
            out = out * (half_v * half_v if i < n - 1 else half_v)
        return out.astype(psi.dtype, copy=False)

    def energy(self, psi) -> float:
        return energy(self.grid, psi, self.V, self.hbar, self.m)

    def evolve(self, psi0, t_end: float, n_snapshots: int = 11, callback: Callable | None = None) -> SchrodingerResult:
        """Evolve to ``t_end`` (a whole number of steps of at most ``self.dt``), storing
        ``n_snapshots`` equally spaced states including ``t=0`` and ``t_end``.
        ``callback(i, n_total)`` is called after each snapshot interval (progress bars)."""
        t_end = check_positive("t_end", t_end)
        n_snapshots = check_int("n_snapshots", n_snapshots, minimum=2)
        intervals = n_snapshots - 1
        steps_per = max(1, int(np.ceil(t_end / intervals / self.dt)))
        dt = t_end / (intervals * steps_per)
        psi = np.asarray(psi0)
        if not np.iscomplexobj(psi):
            psi = psi.astype(np.complex128)
        if psi.shape != self.grid.shape:
            raise ValueError(f"psi0 has shape {psi.shape}, grid has shape {self.grid.shape}")
        snaps = np.empty((n_snapshots, *self.grid.shape), dtype=psi.dtype)
        norms = np.empty(n_snapshots)
        energies = np.empty(n_snapshots)
        snaps[0] = psi
        norms[0] = self.grid.norm(psi)
        energies[0] = self.energy(psi)
        for i in range(1, n_snapshots):
            psi = self.step(psi, steps_per, dt)
            snaps[i] = psi
            norms[i] = self.grid.norm(psi)
            energies[i] = self.energy(psi)
            if callback is not None:
                callback(i, intervals)
        times = np.linspace(0.0, t_end, n_snapshots)
        return SchrodingerResult(times, snaps, norms, energies, psi,
                                 {"dt": dt, "steps": steps_per * intervals, "hbar": self.hbar, "m": self.m})


def imaginary_time_ground_state(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, *,
                                dtau: float = 1e-2, tol: float = 1e-12, max_steps: int = 200_000,
                                psi0=None, check_every: int = 50):
    """Ground state by imaginary-time split-step evolution (``t -> -i tau``), renormalised
    each step. Stops when the energy changes by less than ``tol`` (relative) between checks.
    Returns ``(psi, E)`` with ``psi`` real-positive-gauge, normalised on the grid."""
    V = potential_on_grid(grid, potential)
    hbar = check_positive("hbar", hbar)
    m = check_positive("m", m)
    dtau = check_positive("dtau", dtau)
    half_v = np.exp(-0.5 * V * dtau / hbar)
    kin = np.exp(-0.5 * hbar * grid.k_squared() * dtau / m)
    psi = np.exp(-0.5 * (V - V.min()) / max(hbar, 1e-300)) if psi0 is None else np.asarray(psi0, dtype=np.complex128)
    psi = grid.normalize(psi.astype(np.complex128))
    e_old = np.inf
    steps = 0
    while steps < max_steps:
        for _ in range(check_every):
            psi = half_v * _ifftn(_fftn(half_v * psi) * kin)
            psi /= grid.norm(psi)
        steps += check_every
        e = energy(grid, psi, V, hbar, m)
        if abs(e - e_old) <= tol * max(1.0, abs(e)):
            break
        e_old = e
    # fix the global phase so the largest component is real positive
    j = np.argmax(np.abs(psi))
    psi = psi * (abs(psi.flat[j]) / psi.flat[j])
    return psi, e
