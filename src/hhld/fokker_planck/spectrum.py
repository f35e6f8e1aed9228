r"""The low spectrum of the master-equation generator, relaxation and escape rates.

The generator ``A`` (see :mod:`hhld.fokker_planck.operator`) is similar to the
symmetric ``S = G^{-1/2} A G^{1/2}``, ``G = diag(exp(-U))``: its spectrum is real,
``0 = -lambda_0 > -lambda_1 >= -lambda_2 ...``, and relaxation is a sum of decaying
exponentials with no oscillation. ``lambda_1`` is the relaxation rate (the spectral gap).

Escape rate. For a landscape with two metastable basins A and B and a gap between
``lambda_1`` and ``lambda_2``, the two-state reduction gives (exact for the two-state
Markov chain, asymptotically exact for small D)

.. math:: \lambda_1 = k_{AB} + k_{BA}, \qquad k_{AB} P_A = k_{BA} P_B,

so ``k_AB = lambda_1 P_B`` and ``k_BA = lambda_1 P_A`` with the Gibbs basin masses
``P_A + P_B = 1``; for a symmetric double well ``k = lambda_1 / 2``.

Resolution. In double precision an eigensolver finds eigenvalues of ``S`` only to an absolute
error of about ``eps ||S||`` (``eps = 2.2e-16``; ``||S||`` grows like ``D / h^2`` and with the
drift at the box edges). A metastable landscape at small ``D`` has ``lambda_1 ~ exp(-ΔL/D)``
far below that: for the 1-D double well on 2048 cells at ``D = 0.02`` the true ``lambda_1`` is
about 3.5e-22 but the solver returns 1e-13, round-off. :attr:`Spectrum.resolution` is that
bound. Measured against 40-digit eigenvalues (mpmath, 1-D double well, 96-160 cells,
D = 0.03-0.05) the rates returned here are off by up to ~0.01 ``eps ||S||`` (7% at a true rate of
0.04 ``eps ||S||``, 0.2% at 4.6 ``eps ||S||``), so a rate below
``RESOLUTION_FACTOR * resolution`` (relative error possibly above ~0.5%) gives a
:class:`SpectrumResolutionWarning`, and :attr:`Spectrum.relaxation_rate` (hence the escape
rates) raises for it instead of returning round-off. Use instead Kramers' rate
(:func:`hhld.theory.kramers_rate`), the exact mean first-passage time of the landscape, or
fewer cells / a larger ``D``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._validation import check_int, check_real
from .grid import Grid

__all__ = ["Spectrum", "low_spectrum", "SpectrumResolutionWarning", "RESOLUTION_FACTOR"]

#: rates below this multiple of the round-off bound ``eps ||S||`` may be off by more than ~0.5%
RESOLUTION_FACTOR = 10.0

_ALTERNATIVES = ("use Kramers' rate (hhld.theory.kramers_rate), the exact mean first-passage time, "
                 "or a coarser grid / a larger D so that the rate exceeds the round-off of the eigensolver")


class SpectrumResolutionWarning(UserWarning):
    """A rate of the spectrum lies below what the double-precision eigensolver resolves."""


@dataclass
class Spectrum:
    """``rates``: ``lambda_0 = 0 <= lambda_1 <= ...`` (decay rates, ``-eigenvalues`` of A);
    ``modes``: density eigenvectors ``phi_n = sqrt(pi) v_n`` of ``A`` (shape ``(k, *grid.shape)``);
    ``symmetric_modes``: orthonormal eigenvectors ``v_n`` of ``S`` (flat, ``(k, n)``);
    ``gibbs``: the normalised discrete Gibbs density used."""

    rates: np.ndarray
    modes: np.ndarray
    symmetric_modes: np.ndarray
    gibbs: np.ndarray
    grid: Grid
    #: absolute round-off bound of the rates, ``eps * ||S||_1`` (module docstring)
    resolution: float = 0.0

    def resolved(self, n: int) -> bool:
        """Whether ``rates[n]`` exceeds ``RESOLUTION_FACTOR * resolution`` (relative error < ~0.5%)."""
        return bool(self.rates[n] > RESOLUTION_FACTOR * self.resolution)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of the generator ``A``: ``-rates`` (all ``<= 0``)."""
        return -self.rates

    @property
    def relaxation_rate(self) -> float:
        """The spectral gap ``lambda_1`` (slowest non-trivial decay rate)."""
        if self.rates.size < 2:
            raise ValueError("need k >= 2 eigenvalues for the relaxation rate")
        if not self.resolved(1):
            raise ValueError(
                f"the relaxation rate lambda_1 = {self.rates[1]:.3g} is below what the double-precision "
                f"eigensolver resolves ({RESOLUTION_FACTOR:g} x eps ||S|| = {RESOLUTION_FACTOR * self.resolution:.3g}; "
                f"near or below eps ||S|| = {self.resolution:.3g} it is pure round-off); " + _ALTERNATIVES)
        return float(self.rates[1])

    @property
    def relaxation_time(self) -> float:
        return 1.0 / self.relaxation_rate

    def escape_rates(self, basin_a: np.ndarray) -> tuple[float, float]:
        """``(k_AB, k_BA)`` from ``lambda_1 = k_AB + k_BA`` and detailed balance
        ``k_AB P_A = k_BA P_B``; ``basin_a`` is a boolean mask of ``grid.shape`` marking A."""
        mask = np.asarray(basin_a, dtype=bool).reshape(self.grid.shape)
        p_a = float(self.gibbs[mask].sum() * self.grid.cell_volume)
        p_b = 1.0 - p_a
        lam = self.relaxation_rate
        return lam * p_b, lam * p_a

    def symmetric_escape_rate(self) -> float:
        """``lambda_1 / 2``: the escape rate out of either well of a symmetric double well."""
        return 0.5 * self.relaxation_rate


def low_spectrum(S: sp.spmatrix, gibbs: np.ndarray, grid: Grid, k: int = 6,
                 shift: float | None = None, dense_below: int = 600) -> Spectrum:
    """The ``k`` slowest modes of the symmetric generator ``S`` (see module docstring).

    Uses ``eigsh`` in shift-invert mode around ``sigma = shift > 0`` (default
    ``1e-6 * D/h^2``-scale: ``1e-6 * max|S_ii|``), just right of the spectrum, so
    ``S - sigma`` is negative definite and the slowest modes come first. The eigenvalues are
    refined as Rayleigh quotients ``v^T S v``. Grids with fewer than ``dense_below`` cells
    use a dense symmetric eigensolver. ARPACK starts from a fixed vector, so the result does
    not change from run to run. Rates below the round-off bound (module docstring) give a
    :class:`SpectrumResolutionWarning`.
    """
    n = S.shape[0]
    k = check_int("k", k)
    if shift is not None and not (check_real("shift", shift) > 0):
        raise ValueError(f"shift must be > 0 (the shift-invert point, near the slowest rates), got shift={shift!r}")
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and the number of cells - 1 ({n - 1}), got k={k}")
    S = sp.csr_matrix(S, dtype=np.float64)
    if n < dense_below:
        w, V = np.linalg.eigh(S.toarray())
        order = np.argsort(-w)[:k]
        V = V[:, order]
    else:
        if shift is None:
            shift = 1e-6 * float(np.abs(S.diagonal()).max())
        v0 = np.random.default_rng(0).standard_normal(n)  # fixed start: deterministic results
        w, V = spla.eigsh(S, k=k, sigma=shift, which="LM", tol=1e-12, v0=v0)
        order = np.argsort(-w)
        V = V[:, order]
    rq = np.einsum("ij,ij->j", V, S @ V)
    rates = np.clip(-rq, 0.0, None)
    order = np.argsort(rates)
    rates, V = rates[order], V[:, order]
    # fix signs: largest-magnitude entry positive (the ground mode is then sqrt(pi) >= 0)
    sgn = np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])])
    V = V * sgn
    g = np.asarray(gibbs, dtype=np.float64).ravel()
    sq = np.sqrt(g / g.sum())
    modes = (sq[:, None] * V).T.reshape((k,) + tuple(grid.shape))
    resolution = float(np.finfo(np.float64).eps * abs(S).sum(axis=0).max())
    spec = Spectrum(rates=rates, modes=modes, symmetric_modes=V.T,
                    gibbs=np.asarray(gibbs).reshape(grid.shape), grid=grid, resolution=resolution)
    low = [n for n in range(1, k) if not spec.resolved(n)]
    if low:
        warnings.warn(
            f"rates {', '.join(f'lambda_{n} = {rates[n]:.3g}' for n in low)} lie below what the eigensolver "
            f"resolves in double precision ({RESOLUTION_FACTOR:g} x eps ||S|| = {RESOLUTION_FACTOR * resolution:.3g}; "
            f"near or below eps ||S|| = {resolution:.3g} they are pure round-off, not the true rates): "
            f"{_ALTERNATIVES}", SpectrumResolutionWarning, stacklevel=3)
    return spec
