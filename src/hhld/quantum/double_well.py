"""Tunneling in a double well: ground-state splitting and the packet's oscillation.

Exact statements (for a symmetric double well ``V``):

* the two lowest levels ``E_0 < E_1`` are split by ``Delta E = E_1 - E_0`` (exponentially small
  in the barrier action ``int sqrt(2 m (V - E)) dx / hbar``);
* the packet ``(psi_0 - psi_1) / sqrt(2)`` (or ``+``) sits in one well; under real-time
  evolution its population in the right well is ``(1 - cos(Delta E t / hbar)) / 2`` up to the
  contribution of higher levels: period ``2 pi hbar / Delta E``;
* in imaginary time (the Fokker-Planck picture) the same start relaxes monotonically, see
  :mod:`hhld.quantum.fp_map` and ``docs/theory/quantum.md``.

The documents' WKB formula ``P = exp(-S_barrier / hbar)`` is *their* form; the splitting
computed here is the exact eigenvalue difference on the grid.
"""
from __future__ import annotations

import numpy as np

from .eigen import eigenstates
from .grid import Grid
from .schrodinger import SplitStepSolver, potential_on_grid

__all__ = ["ground_state_splitting", "tunneling_period", "localized_state", "well_population",
           "tunneling_oscillation"]


def ground_state_splitting(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, *, order: int = 4):
    """``(Delta E, E, psi)``: the splitting ``E_1 - E_0`` with the two eigenpairs."""
    E, psi = eigenstates(grid, potential, hbar, m, k=2, order=order)
    return float(E[1] - E[0]), E, psi


def tunneling_period(delta_e: float, hbar: float = 1.0) -> float:
    """``2 pi hbar / Delta E``."""
    if delta_e <= 0:
        raise ValueError(f"the splitting must be > 0, got {delta_e!r}")
    return 2.0 * np.pi * hbar / delta_e


def localized_state(psi0, psi1, side: str = "left", axis_values=None):
    """``(psi_0 -+ psi_1)/sqrt(2)`` chosen to sit in the ``left`` or ``right`` well (x_1 < 0 or > 0)."""
    a = (psi0 + psi1) / np.sqrt(2.0)
    b = (psi0 - psi1) / np.sqrt(2.0)
    x = axis_values
    if x is None:
        x = np.linspace(-1, 1, psi0.shape[0]).reshape((-1,) + (1,) * (psi0.ndim - 1))
    left_a = np.sum(np.abs(a) ** 2 * (x < 0))
    left_b = np.sum(np.abs(b) ** 2 * (x < 0))
    if side == "left":
        return (a if left_a > left_b else b).astype(np.complex128)
    if side == "right":
        return (a if left_a < left_b else b).astype(np.complex128)
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def well_population(grid: Grid, psi_or_rho, *, split: float = 0.0, density: bool = False) -> float:
    """Probability in the right well ``x_1 > split`` (``density=True``: the argument is a density)."""
    x = grid.mesh()[0]
    w = psi_or_rho if density else np.abs(psi_or_rho) ** 2
    return float(np.sum(w * (x > split)) / np.sum(w))


def tunneling_oscillation(grid: Grid, potential, hbar: float = 1.0, m: float = 1.0, *,
                          periods: float = 1.0, n_times: int = 101, dt: float | None = None):
    """Evolve the left-localised packet for ``periods`` tunneling periods; returns a dict with
    ``times``, ``right_population``, ``delta_e``, ``period`` and the predicted
    ``(1 - cos(Delta E t / hbar))/2``."""
    V = potential_on_grid(grid, potential)
    dE, E, psi = ground_state_splitting(grid, V, hbar, m)
    T = tunneling_period(dE, hbar)
    x = grid.mesh()[0]
    psi_l = grid.normalize_wave(localized_state(psi[0], psi[1], "left", x))
    t_end = periods * T
    if dt is None:  # split-step is unconditionally stable; this resolves the tunneling phase
        dt = T / 4000.0
    solver = SplitStepSolver(grid, V, hbar, m, dt=dt)
    res = solver.evolve(psi_l, t_end, n_times)
    pop = np.array([well_population(grid, s) for s in res.snapshots])
    return {"times": res.times, "right_population": pop, "delta_e": dE, "period": T, "levels": E,
            "predicted": 0.5 * (1.0 - np.cos(dE * res.times / hbar)), "norms": res.norms}
