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

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._validation import (BOUNDARY_MASS_WARN, BOUNDARY_SHELL, BoxTruncationWarning, NonFiniteError,
                           boundary_mass_fraction, check_int, check_positive)
from ..grid import _available_memory
from .grid import Grid

__all__ = ["SplitStepSolver", "potential_on_grid", "SchrodingerResult", "imaginary_time_ground_state",
           "energy", "residual_norm", "ConvergenceWarning", "ResolutionWarning", "spectral_tail", "RESOLUTION_TAIL",
           "ENERGY_DRIFT_TOL", "BoxWrapWarning", "edge_probability", "EDGE_PROBABILITY_TOL"]


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
    if np.shape(psi) != grid.shape or np.shape(V) != grid.shape:
        raise ValueError(f"psi and V must have the grid's shape {grid.shape}, got {np.shape(psi)} and {np.shape(V)}")
    phik = _fftn(psi)
    kin = hbar ** 2 / (2 * m) * np.sum(grid.k_squared() * np.abs(phik) ** 2)
    pot = np.sum(V * np.abs(psi) ** 2)
    return float((kin + pot) / np.sum(np.abs(psi) ** 2))


#: largest share of the norm allowed in the outer third of the wavenumbers (:func:`spectral_tail`) before the grid
#: is said not to resolve the state (measured: 1e-13 to 1e-10 on resolved runs, 1e-6 on a 3-D packet of width
#: 0.25 sampled every 0.21, 0.2-0.6 where the evolution had gone wrong)
RESOLUTION_TAIL = 1e-4
#: largest energy drift of an evolution, relative to ``<T> + <|V|>`` at t = 0, before the time step is said too large
ENERGY_DRIFT_TOL = 1e-2


class ResolutionWarning(UserWarning):
    """The grid does not resolve the wave function (aliasing), or the time step is too large for the splitting."""


def spectral_tail(grid: Grid, psi) -> float:
    """Share of ``sum |psi_hat(k)|^2`` at wavenumbers beyond two thirds of the grid's largest, on any axis.

    A resolved state has a spectrum that has decayed long before the Nyquist wavenumber ``pi/dx`` (1e-10 and less
    for the command line's defaults); a state whose phase varies faster than the grid can follow (``hbar`` small
    against the grid: ``|p|/hbar`` beyond ``pi/dx``) aliases, and its spectrum fills the whole range (measured: 0.2 to
    0.6 on 64 points at ``hbar = 0.01`` or ``1e-8``, where the packet then stays where it started, with the energy
    "conserved" to 1e-7). The norm and the energy of the split-step scheme do not show it; this does."""
    ph = np.abs(_fftn(np.asarray(psi))) ** 2
    total = float(ph.sum())
    if total == 0.0:
        return 0.0
    outer = np.zeros(grid.shape, dtype=bool)
    for ax, k in enumerate(grid.wavenumbers()):
        shape = [1] * grid.dim
        shape[ax] = -1
        outer |= (np.abs(k) > (2.0 / 3.0) * np.abs(k).max()).reshape(shape)
    return float(ph[outer].sum() / total)


#: largest probability ``|psi|^2`` allowed near the faces of the box (:func:`edge_probability`) before the periodic
#: box is said to wrap the wave function around (the library's box-truncation limit,
#: :data:`hhld._validation.BOUNDARY_MASS_WARN`)
EDGE_PROBABILITY_TOL = BOUNDARY_MASS_WARN


class BoxWrapWarning(BoxTruncationWarning):
    """The wave function reached the faces of the split-step solver's periodic box: what leaves one face comes
    back in at the opposite one, so the evolution is that of a particle on a ring, not in the open space (a
    :class:`hhld._validation.BoxTruncationWarning`, so filters on box truncation catch it too)."""


def edge_probability(grid: Grid, psi) -> float:
    """Share of the probability ``|psi|^2`` (of its sum over the grid) within ``hhld._validation.BOUNDARY_SHELL``
    of the box width of any face of ``grid`` (at least the outermost cell of every axis): the library's
    box-truncation measure (:func:`hhld._validation.boundary_mass_fraction`) applied to ``|psi|^2``.

    The split-step box is periodic: a free packet that spreads past the faces wraps around and interferes with
    itself while the norm and the energy stay exactly conserved (sigma0 = 0.5 on [-10, 10]: standard deviation 5.78
    at t = 10 instead of 10.01). A packet that stays inside keeps this at round-off."""
    rho = np.abs(np.asarray(psi)) ** 2
    if not np.any(rho):
        return 0.0
    with np.errstate(divide="ignore"):
        return boundary_mass_fraction(grid.axes, np.log(rho), grid.box)


@dataclass
class SchrodingerResult:
    times: np.ndarray
    snapshots: np.ndarray  # (n_snap, *grid.shape)
    norms: np.ndarray
    energies: np.ndarray
    psi: np.ndarray  # final state
    meta: dict = field(default_factory=dict)
    spectral_tails: np.ndarray | None = None  # :func:`spectral_tail` of each snapshot
    edge_probabilities: np.ndarray | None = None  # :func:`edge_probability` of each snapshot


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

    def _state(self, psi, name: str = "psi"):
        """``psi`` as a complex array of the grid's shape, finite and not zero."""
        psi = np.asarray(psi)
        if psi.dtype.kind not in "biufc":
            raise TypeError(f"{name} must be a numeric array, got dtype {psi.dtype}")
        if not np.iscomplexobj(psi):
            psi = psi.astype(np.complex128)
        if psi.shape != self.grid.shape:
            raise ValueError(f"{name} has shape {psi.shape}, grid has shape {self.grid.shape}")
        if not np.all(np.isfinite(psi)):
            raise NonFiniteError(f"{name} has non-finite values", quantity=name)
        if not np.any(psi):
            raise ValueError(f"{name} is zero everywhere: not a wave function")
        return psi

    def step(self, psi, n: int = 1, dt: float | None = None):
        """``n >= 0`` Strang steps of size ``dt > 0`` (default ``self.dt``); returns a new array."""
        dt = self.dt if dt is None else check_positive("dt", dt)
        n = check_int("n", n, minimum=0)
        psi = self._state(psi)
        if n == 0:
            return psi.copy()
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
        if dt <= 0 or not np.isfinite(dt):
            raise ValueError(f"t_end={t_end!r} over {intervals * steps_per} steps gives the step dt={dt!r}; "
                             f"use a larger t_end")
        psi = self._state(psi0, "psi0")
        need = float(n_snapshots) * self.grid.size * psi.dtype.itemsize
        if need > _available_memory():
            raise ValueError(f"n_snapshots={n_snapshots} snapshots of {self.grid.size:,} values need "
                             f"{need / 2 ** 30:.3g} GiB, more than the available memory "
                             f"({_available_memory() / 2 ** 30:.3g} GiB); store fewer snapshots")
        snaps = np.empty((n_snapshots, *self.grid.shape), dtype=psi.dtype)
        norms = np.empty(n_snapshots)
        energies = np.empty(n_snapshots)
        tails = np.empty(n_snapshots)
        edges = np.empty(n_snapshots)
        snaps[0] = psi
        norms[0] = self.grid.norm(psi)
        energies[0] = self.energy(psi)
        tails[0] = spectral_tail(self.grid, psi)
        edges[0] = edge_probability(self.grid, psi)
        for i in range(1, n_snapshots):
            psi = self.step(psi, steps_per, dt)
            snaps[i] = psi
            norms[i] = self.grid.norm(psi)
            energies[i] = self.energy(psi)
            tails[i] = spectral_tail(self.grid, psi)
            edges[i] = edge_probability(self.grid, psi)
            if callback is not None:
                callback(i, intervals)
        times = np.linspace(0.0, t_end, n_snapshots)
        self._check_accuracy(snaps[0], times, energies, tails, dt, edges)
        return SchrodingerResult(times, snaps, norms, energies, psi,
                                 {"dt": dt, "steps": steps_per * intervals, "hbar": self.hbar, "m": self.m}, tails,
                                 edges)

    def _check_accuracy(self, psi0, times, energies, tails, dt, edges=None):
        """One :class:`ResolutionWarning` when a snapshot is not resolved by the grid (:func:`spectral_tail` above
        :data:`RESOLUTION_TAIL`) or the energy drifted by more than :data:`ENERGY_DRIFT_TOL` of ``<T> + <|V|>`` at
        t = 0 (the splitting's time-step error); one :class:`BoxWrapWarning` when a snapshot has more than
        :data:`EDGE_PROBABILITY_TOL` of its probability near the faces of the periodic box (:func:`edge_probability`:
        it wraps around). The numbers are kept, the warnings say what they are worth."""
        if edges is not None:
            far = np.nonzero(edges > EDGE_PROBABILITY_TOL)[0]
            if far.size:
                i = int(far[0])
                warnings.warn(f"the wave function reaches the faces of the periodic box {list(self.grid.box)} from "
                              f"t = {times[i]:.4g} on: a probability {edges[i]:.2g} (at most {edges.max():.2g} over "
                              f"the run, at t = {times[int(np.argmax(edges))]:.4g}) lies within {BOUNDARY_SHELL:g} of "
                              f"the box width of its faces (limit {EDGE_PROBABILITY_TOL:g}); what leaves one face "
                              f"comes back in at the opposite one, so from there on the evolution is that of a "
                              f"periodic box, not of the open space: means, spreads and energies can be off by this "
                              f"order or much more (a free packet: sigma 5.78 instead of 10.01) although the norm and "
                              f"the energy look conserved; use a larger box (or a shorter t_end)",
                              BoxWrapWarning, stacklevel=3)
        bad = np.nonzero(tails > RESOLUTION_TAIL)[0]
        if bad.size:
            i = int(bad[0])
            warnings.warn(f"the grid does not resolve the wave function from t = {times[i]:.4g} on: {tails[i]:.2g} of "
                          f"its norm (at most {tails.max():.2g} over the run) lies in the outer third of the wavenumbers "
                          f"(limit {RESOLUTION_TAIL:g}); its phase varies faster than the grid follows (|p|/hbar near "
                          f"pi/dx), so it aliases and the evolution from there on is wrong although the norm and "
                          f"the energy look conserved; use more points or a larger hbar", ResolutionWarning,
                          stacklevel=3)
        rho0 = np.abs(psi0) ** 2
        scale = (energy(self.grid, psi0, np.zeros_like(self.V), self.hbar, self.m)
                 + float(np.sum(np.abs(self.V) * rho0) / np.sum(rho0)))
        drift = float(np.max(np.abs(energies - energies[0])))
        if scale > 0 and drift > ENERGY_DRIFT_TOL * scale:
            warnings.warn(f"the energy drifted by {drift:.3g} ({drift / scale:.2g} of <T> + <|V|> = {scale:.3g} at "
                          f"t = 0; limit {ENERGY_DRIFT_TOL:g}): the split-step error of dt = {dt:.3g} is large; use "
                          f"a smaller dt", ResolutionWarning, stacklevel=3)


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before it converged, or converged to an inaccurate answer."""


def residual_norm(grid: Grid, psi, V, hbar: float = 1.0, m: float = 1.0) -> tuple[float, float]:
    """``(r, E)``: ``E = <H>`` and the residual ``r = ||(H - E) psi||`` of a normalised ``psi``
    (spectral kinetic energy). By Weinstein's bound some eigenvalue of ``H`` lies within ``r``
    of ``E``; for the ground state the energy error is of order ``r^2 / gap``."""
    E = energy(grid, psi, V, hbar, m)
    hpsi = _ifftn(hbar ** 2 / (2 * m) * grid.k_squared() * _fftn(psi)) + V * psi
    r = float(np.sqrt(np.sum(np.abs(hpsi - E * psi) ** 2) * grid.dV) / grid.norm(psi))
    return r, E


#: ``imaginary_time_ground_state`` warns when its residual exceeds this fraction of ``E - min V``
GROUND_STATE_RESIDUAL_WARN = 0.1


def imaginary_time_ground_state(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, *,
                                dtau: float = 1e-2, tol: float = 1e-12, max_steps: int = 200_000,
                                psi0=None, check_every: int = 50):
    """Ground state by imaginary-time split-step evolution (``t -> -i tau``), renormalised
    each step. Stops when the energy changes by less than ``tol`` (relative) between checks.
    Returns ``(psi, E)`` with ``psi`` real-positive-gauge, normalised on the grid.

    The splitting converges to the ground state of the split operator, ``O(dtau^2)`` away from
    that of ``H``. A :class:`ConvergenceWarning` is given when the energy has not settled after
    ``max_steps`` steps, and when the residual ``r = ||(H - E) psi||`` (:func:`residual_norm`)
    exceeds ``GROUND_STATE_RESIDUAL_WARN * (E - min V)`` (an energy error of order 1% or more:
    ``dtau = 1e3`` on the double well gave E = 1031 instead of 0.8696; the default 1e-2 is
    within 3e-8)."""
    V = potential_on_grid(grid, potential)
    hbar = check_positive("hbar", hbar)
    m = check_positive("m", m)
    dtau = check_positive("dtau", dtau)
    tol = check_positive("tol", tol)
    max_steps = check_int("max_steps", max_steps, minimum=1)
    check_every = check_int("check_every", check_every, minimum=1)
    half_v = np.exp(-0.5 * (V - V.min()) * dtau / hbar)  # shifted: no overflow; the norm is restored each step
    kin = np.exp(-0.5 * hbar * grid.k_squared() * dtau / m)
    if psi0 is None:
        psi = np.exp(-0.5 * (V - V.min()) / hbar).astype(np.complex128)
    else:
        psi = np.asarray(psi0)
        if psi.shape != grid.shape or psi.dtype.kind not in "biufc":
            raise ValueError(f"psi0 must be a numeric array of the grid's shape {grid.shape}, got "
                             f"shape {psi.shape} and dtype {psi.dtype}")
        psi = psi.astype(np.complex128)
    psi = grid.normalize_wave(psi)
    e_old = np.inf
    steps = 0
    converged = False
    while steps < max_steps:
        for _ in range(min(check_every, max_steps - steps)):
            psi = half_v * _ifftn(_fftn(half_v * psi) * kin)
            psi /= grid.norm(psi)
            steps += 1
        e = energy(grid, psi, V, hbar, m)
        if abs(e - e_old) <= tol * max(1.0, abs(e)):
            converged = True
            break
        e_old = e
    if not converged:
        warnings.warn(f"imaginary-time evolution did not converge in max_steps={max_steps} steps of dtau={dtau!r} "
                      f"(last energy change {abs(e - e_old):.3g}, tol={tol!r}); raise max_steps or dtau",
                      ConvergenceWarning, stacklevel=2)
    r, e = residual_norm(grid, psi, V, hbar, m)
    scale = e - float(V.min())
    if converged and not r <= GROUND_STATE_RESIDUAL_WARN * max(scale, 0.0):
        warnings.warn(f"the imaginary-time ground state is inaccurate: E = {e:.6g} with residual ||(H - E) psi|| = "
                      f"{r:.3g} (> {GROUND_STATE_RESIDUAL_WARN:g} x (E - min V) = {GROUND_STATE_RESIDUAL_WARN * scale:.3g}; "
                      f"energy error of order r^2/(E - min V) = {r * r / max(scale, 1e-300):.3g}); the splitting error "
                      f"is O(dtau^2): reduce dtau={dtau!r}, or use hhld.quantum.eigenstates", ConvergenceWarning,
                      stacklevel=2)
    # fix the global phase so the largest component is real positive
    j = np.argmax(np.abs(psi))
    psi = psi * (abs(psi.flat[j]) / psi.flat[j])
    return psi, e
