r"""Functionals of a density on the grid: KL, entropy, free energy, entropy production.

All integrals are midpoint sums over the cells; ``rho`` is a normalised density
(``sum(rho) h^d = 1``), ``L`` the landscape on the cell centres, mobility ``mu``,
diffusion ``D`` (Gibbs ``rho* ∝ exp(-mu L / D)``, temperature ``T = D/mu``).

Formulas (continuum form; the discrete form replaces gradients by differences across
the faces between neighbouring cells, ``sum_faces (.) h^d / h_k^2``):

* Shannon entropy, the paper's (2.4): ``S = -∫ p log p`` (differential entropy).
* KL divergence: ``KL(p||p*) = ∫ p log(p/p*)``.
* Free energy: ``F = E_p[L] - (D/mu) S``; exactly ``F - F* = (D/mu) KL(p||p*)`` on the grid.
* Entropy production, paper's (2.5) with its drift ``gamma dF/dq`` identified with our
  ``-mu dL/dq``:

  .. math:: \frac{dS}{dt} = \underbrace{D\int \frac{|\nabla p|^2}{p}}_{\text{diffusion}}
            + \underbrace{\mu \int \nabla p\cdot\nabla L}_{\text{learning}}
            \quad(\text{paper: } -\gamma\int\nabla p\cdot\nabla F).

  This split is exact in the continuum (with no-flux boundaries). On the grid the
  diffusion term is ``D sum_faces (p_j - p_i)(log p_j - log p_i) / h^2`` and the learning
  term ``mu sum_faces (p_j - p_i)(L_j - L_i) / h^2``; their sum approximates the exact
  discrete rate ``-sum_i log(p_i) (A p)_i h^d`` (reported as ``total``) to O(h^2).
* The paper's (2.6): ``dS/dt ≈ ∫ sqrt(p) (-4 D ∇²) sqrt(p) = 4D ∫ |∇ sqrt p|^2``, the
  Fisher information times ``D``. In the continuum it *equals* the diffusion term of (2.5)
  identically; the approximation in (2.6) is dropping the learning term. At the Gibbs
  state the learning term is exactly ``-D∫|∇p|^2/p`` and ``dS/dt = 0`` while (2.6) stays
  positive, so (2.6) is not the equilibrium limit of (2.5); see docs/theory/master_equation.md.
* Free-energy dissipation (exact): ``dF/dt = -(1/mu) ∫ |J|^2 / p <= 0``; on the grid
  ``sum_i (L_i + (D/mu) log p_i) (A p)_i h^d``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._validation import NonFiniteError
from .grid import Grid
from .operator import face_pairs

__all__ = ["kl_divergence", "shannon_entropy", "free_energy", "EntropyProduction",
           "entropy_production", "fisher_information", "check_density", "MASS_TOL", "NEGATIVE_TOL"]

_TINY = np.finfo(np.float64).tiny

#: relative deviation of ``∫ rho`` from 1 accepted by the functionals (float32 round-off included)
MASS_TOL = 1e-5
#: negative entries down to ``-NEGATIVE_TOL * max(rho)`` are round-off of an evolution and read as 0
NEGATIVE_TOL = 1e-10


def check_density(grid: Grid, rho, name: str = "rho") -> np.ndarray:
    """``rho`` as a flat float64 array after checking that it is a normalised density on ``grid``.

    Raises :class:`hhld.NonFiniteError` on NaN/inf, ``ValueError`` on the wrong size, on negative
    entries beyond round-off (``< -NEGATIVE_TOL * max rho``) and on a total mass ``∫ rho`` that
    differs from 1 by more than ``MASS_TOL`` (a KL or an entropy of such an array has no meaning;
    normalise it with ``grid.normalize_density``). Round-off negatives are set to 0 in the returned copy.
    """
    p = np.asarray(rho)
    if p.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array, got dtype {p.dtype}")
    p = p.astype(np.float64).ravel()
    if p.size != grid.size:
        raise ValueError(f"{name} must have {grid.size} values (grid shape {grid.shape}), got {np.shape(rho)}")
    bad = ~np.isfinite(p)
    if bad.any():
        i = int(np.argmax(bad))
        raise NonFiniteError(f"{name} has {int(bad.sum())} non-finite value(s) (first {p[i]!r} at flat index {i}); "
                             f"a density must be finite", quantity=name)
    top = float(p.max()) if p.size else 0.0
    low = float(p.min()) if p.size else 0.0
    if low < -NEGATIVE_TOL * max(top, 0.0) or (low < 0 and top <= 0):
        raise ValueError(f"{name} must be >= 0 (a density), got a minimum of {low!r} "
                         f"(largest value {top!r})")
    mass = float(p.sum() * grid.cell_volume)
    if not abs(mass - 1.0) <= MASS_TOL:
        raise ValueError(f"{name} must be a normalised density (∫ {name} = 1 within {MASS_TOL:g}), "
                         f"got ∫ {name} = {mass!r}; normalise it with grid.normalize_density({name})")
    if low < 0:
        p = np.maximum(p, 0.0)
    return p


def _plogp(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros_like(p)
    pos = p > 0
    out[pos] = p[pos] * np.log(p[pos])
    return out


def shannon_entropy(grid: Grid, rho: np.ndarray) -> float:
    """Paper's (2.4): ``S = -∫ p log p`` (differential entropy on the grid; ``0 log 0 = 0``).
    ``rho`` must be a normalised density (:func:`check_density`)."""
    return -float(_plogp(check_density(grid, rho)).sum() * grid.cell_volume)


def kl_divergence(grid: Grid, rho: np.ndarray, ref: np.ndarray | None = None, *,
                  log_ref: np.ndarray | None = None) -> float:
    """``KL(rho||ref) = ∫ rho log(rho/ref)``; ``inf`` if ``rho > 0`` where ``ref = 0``.

    Give ``log_ref`` (the log of the reference density) instead of ``ref`` when the reference
    underflows somewhere, e.g. a Gibbs density at small D (see ``log_gibbs_density``).
    ``rho`` must be a normalised density (:func:`check_density`): a negative, non-finite or
    unnormalised array raises instead of giving a meaningless number."""
    if (ref is None) == (log_ref is None):
        raise ValueError("give exactly one of ref and log_ref")
    p = check_density(grid, rho)
    pos = p > 0
    if log_ref is not None:
        logq = np.asarray(log_ref, dtype=np.float64).ravel()[pos]
        if not np.all(np.isfinite(logq)):
            return float("inf")
    else:
        q = np.asarray(ref, dtype=np.float64).ravel()
        if np.any(q[pos] <= 0):
            return float("inf")
        logq = np.log(q[pos])
    val = np.sum(p[pos] * (np.log(p[pos]) - logq)) * grid.cell_volume
    return float(max(val, 0.0))


def free_energy(grid: Grid, rho: np.ndarray, L: np.ndarray, D: float, mu: float = 1.0) -> float:
    """``F = E[L] - (D/mu) S`` (temperature ``T = D/mu``)."""
    p = check_density(grid, rho)
    energy = float(np.sum(p * np.asarray(L, dtype=np.float64).ravel()) * grid.cell_volume)
    return energy - (D / mu) * shannon_entropy(grid, p)


def fisher_information(grid: Grid, rho: np.ndarray) -> float:
    """``I = ∫ |∇p|^2 / p = 4 ∫ |∇ sqrt p|^2 = ∫ sqrt p (-4 ∇²) sqrt p`` (Neumann ∇² on the
    grid); the paper's (2.6) is ``D * I``."""
    q = np.sqrt(check_density(grid, rho))
    tot = 0.0
    for k in range(grid.dim):
        i, j = face_pairs(grid, k)
        tot += np.sum((q[j] - q[i]) ** 2) / grid.h[k] ** 2
    return float(4.0 * tot * grid.cell_volume)


@dataclass
class EntropyProduction:
    """The terms of the paper's (2.5)/(2.6) for one density (see module docstring).

    ``diffusion`` = ``D ∫|∇p|²/p``; ``learning`` = ``mu ∫ ∇p·∇L`` (paper: ``-gamma ∫∇p·∇F``);
    ``paper_total`` = their sum (2.5); ``fisher`` = (2.6) ``D ∫ sqrt p(-4∇²)sqrt p``;
    ``total`` = exact ``dS/dt`` of the discrete master equation;
    ``free_energy_rate`` = exact ``dF/dt <= 0``.
    """

    diffusion: float
    learning: float
    fisher: float
    total: float
    free_energy_rate: float

    @property
    def paper_total(self) -> float:
        return self.diffusion + self.learning

    def as_dict(self) -> dict:
        return {"diffusion": self.diffusion, "learning": self.learning, "paper_total": self.paper_total,
                "fisher_2_6": self.fisher, "total_exact": self.total,
                "free_energy_rate": self.free_energy_rate}


def entropy_production(grid: Grid, rho: np.ndarray, L: np.ndarray, A: sp.spmatrix, D: float,
                       mu: float = 1.0) -> EntropyProduction:
    """All entropy-production terms of ``rho`` (module docstring); ``A`` is the generator."""
    p = check_density(grid, rho)
    Lf = np.asarray(L, dtype=np.float64).ravel()
    logp = np.log(np.maximum(p, _TINY))
    diff = learn = 0.0
    for k in range(grid.dim):
        i, j = face_pairs(grid, k)
        dp = p[j] - p[i]
        diff += np.sum(dp * (logp[j] - logp[i])) / grid.h[k] ** 2
        learn += np.sum(dp * (Lf[j] - Lf[i])) / grid.h[k] ** 2
    v = grid.cell_volume
    Ap = A @ p
    pos = p > 0
    total = -float(np.sum(logp[pos] * Ap[pos]) * v)
    dF = float(np.sum((Lf + (D / mu) * logp)[pos] * Ap[pos]) * v)
    return EntropyProduction(diffusion=float(D * diff * v), learning=float(mu * learn * v),
                             fisher=D * fisher_information(grid, p), total=total,
                             free_energy_rate=dF)
