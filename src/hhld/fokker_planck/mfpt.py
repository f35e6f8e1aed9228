r"""Exact mean first-passage times, committors and transition rates from the Fokker-Planck
generator on a grid (any dimension the grid supports, 1-3).

The Scharfetter-Gummel generator ``A`` of :mod:`hhld.fokker_planck.operator` is a
continuous-time Markov jump process between cells with rates ``r(i -> j) = A[j, i]``; its
backward generator (acting on functions of the cell) is ``A^T``. With ``T`` a set of target
cells:

* **mean first-passage time** ``τ``: ``(A^T τ)_i = -1`` outside ``T``, ``τ = 0`` on ``T`` — the
  grid form of ``𝓛τ = −1`` with absorbing targets;
* **committor** ``q`` between sets ``A`` and ``B``: ``q = 0`` on ``A``, ``1`` on ``B``,
  ``(A^T q)_i = 0`` elsewhere (the probability of reaching ``B`` before ``A``);
* **transition rate between two sets** (transition path theory, Vanden-Eijnden & E): reactive
  flux ``ν_AB = Σ_{i∈A} π_i (A^T q)_i`` (transitions ``A → B`` per unit time), the probability
  ``ρ_A = Σ_i π_i (1 − q_i)`` of having last visited ``A`` (the dynamics is reversible, so the
  backward committor is ``1 − q``) and the rate ``k_AB = ν_AB / ρ_A``. This is what an ensemble
  estimator "transitions between the cores per unit time spent in a core" (with hysteresis,
  :class:`hhld.dynamics.TransitionObserver`) measures as ``dt → 0``; in 1-D it equals
  ``1/τ(edge of A → B)`` exactly.

All three are exact for the grid's Markov chain, and converge to the continuum values at second
order in the cell width (tested against the 1-D double integral
:func:`hhld.theory.passage.mean_first_passage_time_1d`). Targets are sets of cells: the chain
reaches a set when it jumps into one of its cells, so a set given as a region ``θ₁ > 0.5``
is reached at the centre of its first cell (choose a grid with a centre on the boundary for a
like-for-like comparison). Every solve is one sparse LU factorisation.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["cell_set", "mean_first_passage_time", "committor", "TransitionRate", "transition_rate"]


def cell_set(fp, region, name: str = "region") -> np.ndarray:
    """A boolean mask of ``fp.grid.shape``: ``region`` is such a mask already, or a function of
    the cell centres ``(n, d) -> (n,)`` booleans (e.g. ``lambda th: th[:, 0] > 0.5``)."""
    shape = tuple(fp.grid.shape)
    if callable(region):
        mask = np.asarray(region(fp.grid.points()))
        if mask.shape != (fp.grid.size,):
            raise ValueError(f"{name}(points) must return one boolean per cell ({fp.grid.size},), got shape "
                             f"{mask.shape}")
        mask = mask.astype(bool).reshape(shape)
    else:
        mask = np.asarray(region)
        if mask.dtype != bool or mask.shape != shape:
            raise ValueError(f"{name} must be a boolean mask of the grid's shape {shape} or a function of the cell "
                             f"centres, got {mask.dtype} array of shape {mask.shape}")
    if not mask.any():
        raise ValueError(f"{name} contains no cell of the grid {fp.grid!r}")
    if mask.all():
        raise ValueError(f"{name} contains every cell of the grid: nothing is left outside it")
    return mask


def _backward(fp) -> sp.csr_matrix:
    return sp.csr_matrix(fp.generator.T)


def _solve_outside(L: sp.csr_matrix, inside: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``L[I, I] x_I = rhs_I`` on the cells ``I`` (flat boolean mask)."""
    idx = np.flatnonzero(inside)
    sub = L[idx][:, idx].tocsc()
    x = spla.spsolve(sub, rhs[idx])
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("the sparse solve gave non-finite values: is every cell connected to the target?")
    return x


def mean_first_passage_time(fp, target) -> np.ndarray:
    """Mean first-passage time into ``target`` from every cell (0 on the target), array of
    ``fp.grid.shape`` — **exact result** for the grid's Markov chain (see the module docstring).
    ``fp``: a :class:`~hhld.fokker_planck.FokkerPlanck`; ``target``: mask or function of points."""
    T = cell_set(fp, target, "target").ravel()
    tau = np.zeros(fp.grid.size)
    tau[~T] = _solve_outside(_backward(fp), ~T, -np.ones(fp.grid.size))
    return tau.reshape(fp.grid.shape)


def committor(fp, set_a, set_b) -> np.ndarray:
    """The forward committor ``q``: probability of reaching ``set_b`` before ``set_a`` from each
    cell (0 on A, 1 on B) — **exact result** for the grid's chain."""
    A = cell_set(fp, set_a, "set_a").ravel()
    B = cell_set(fp, set_b, "set_b").ravel()
    if (A & B).any():
        raise ValueError("set_a and set_b overlap")
    L = _backward(fp)
    rest = ~(A | B)
    q = B.astype(np.float64)
    if rest.any():
        rhs = -(L[:, np.flatnonzero(B)] @ np.ones(int(B.sum())))
        q[rest] = _solve_outside(L, rest, rhs)
    return q.reshape(fp.grid.shape)


@dataclass(frozen=True)
class TransitionRate:
    """Transition-path-theory rates between two sets (see the module docstring): ``rate_ab``
    (``A → B`` transitions per unit time spent having last visited A), ``rate_ba``, the
    reactive ``flux`` (transitions ``A → B`` per unit time), ``prob_last_a`` / ``prob_last_b``
    and the ``committor`` (grid shape)."""

    rate_ab: float
    rate_ba: float
    flux: float
    prob_last_a: float
    prob_last_b: float
    committor: np.ndarray

    @property
    def mean_passage_ab(self) -> float:
        """``1 / rate_ab``: the mean time from entering A to reaching B."""
        return 1.0 / self.rate_ab


def transition_rate(fp, set_a, set_b) -> TransitionRate:
    """The exact rate of transitions between ``set_a`` and ``set_b`` (e.g. the cores of two wells)
    from the grid's generator — **exact result** (transition path theory; module docstring)."""
    q = committor(fp, set_a, set_b).ravel()
    A = cell_set(fp, set_a, "set_a").ravel()
    pi = np.asarray(fp.gibbs(), dtype=np.float64).ravel() * fp.grid.cell_volume
    pi = pi / pi.sum()
    Lq = _backward(fp) @ q
    flux = float(np.sum(pi[A] * Lq[A]))
    prob_a = float(np.sum(pi * (1.0 - q)))
    prob_b = float(np.sum(pi * q))
    if not flux > 0:
        raise FloatingPointError(f"the reactive flux between the sets is {flux!r} (below what float64 resolves?); "
                                 "use a larger D or the Arrhenius exponent")
    return TransitionRate(rate_ab=flux / prob_a, rate_ba=flux / prob_b, flux=flux, prob_last_a=prob_a,
                          prob_last_b=prob_b, committor=q.reshape(fp.grid.shape))



@dataclass(frozen=True)
class TransitionCount:
    """What :func:`expected_transitions` returns, per particle over ``[0, T]``: the expected number of
    transitions between the two sets (``count``), the expected time spent having visited one of them
    (``occupancy``), and ``rate = count / occupancy``."""

    count: float
    occupancy: float
    rate: float
    T: float


def expected_transitions(fp, set_a, set_b, rho0, T: float) -> TransitionCount:
    """The exact expectation of the hysteresis estimator of a transition rate, started from ``rho0``
    and run for a time ``T`` — **exact result** for the grid's chain.

    The estimator (:class:`hhld.dynamics.TransitionObserver`) labels a particle by the last set it
    visited (none before the first), counts the label changes ``A -> B`` and ``B -> A``, and divides
    by the time spent labelled. Its ``T -> inf`` limit is :func:`transition_rate`; at finite ``T``
    and from a start inside ``A`` it is lower (the first passage from the bottom of the well is
    longer than one from the edge of ``A``), which this function computes: the chain on (cell, label)
    pairs is integrated to ``T`` together with the expected count and occupancy (one matrix
    exponential of an augmented generator)."""
    import scipy.linalg as sla

    from .._validation import check_positive

    T = check_positive("T", T)
    A = cell_set(fp, set_a, "set_a").ravel()
    B = cell_set(fp, set_b, "set_b").ravel()
    if (A & B).any():
        raise ValueError("set_a and set_b overlap")
    n = fp.grid.size
    p0 = np.asarray(rho0, dtype=np.float64).ravel()
    if p0.size != n or not np.all(np.isfinite(p0)) or np.any(p0 < 0) or not p0.sum() > 0:
        raise ValueError(f"rho0 must be a density on the grid (shape {tuple(fp.grid.shape)}, finite, >= 0)")
    p0 = p0 / p0.sum()
    start_label = np.where(A, 1, np.where(B, 2, 0))
    labels = [0, 1, 2] if np.any(p0[start_label == 0] > 0) else [1, 2]  # "no set yet" only if it starts there
    L = len(labels)
    N = L * n + 2
    if N > 6000:
        raise ValueError(f"expected_transitions builds a dense matrix of {N} states; use at most ~2000 cells")
    G = sp.coo_matrix(fp.generator)
    off = G.row != G.col
    src, dst, r = G.col[off], G.row[off], G.data[off]          # rate r of the jump src -> dst
    label_of = np.where(A, 1, np.where(B, 2, -1))               # the label a cell imposes (-1: keeps it)
    slot = np.full(3, -1)
    slot[labels] = np.arange(L)                                 # block of each label in the state vector
    M = np.zeros((N, N))
    diag = np.asarray(fp.generator.diagonal())
    count_row, occ_row = L * n, L * n + 1
    for lab in labels:                                           # 0: no set yet, 1: A, 2: B
        s = slot[lab]
        new = np.where(label_of[dst] >= 0, label_of[dst], lab)
        np.add.at(M, (slot[new] * n + dst, s * n + src), r)
        M[s * n + np.arange(n), s * n + np.arange(n)] += diag
        if lab:
            switch = (new != lab) & (new != 0)
            np.add.at(M, (np.full(int(switch.sum()), count_row), s * n + src[switch]), r[switch])
            M[occ_row, s * n: (s + 1) * n] = 1.0
    x0 = np.zeros(N)
    on = p0 > 0
    x0[slot[start_label[on]] * n + np.flatnonzero(on)] = p0[on]
    xT = sla.expm(T * M) @ x0
    count, occ = float(xT[count_row]), float(xT[occ_row])
    return TransitionCount(count=count, occupancy=occ, rate=count / occ if occ > 0 else float("nan"), T=T)
