"""The harmonic oscillator: levels, coherent states, ladder operators on a grid.

Exact results for ``H = p^2/(2m) + m omega^2 x^2 / 2`` (per axis):

* levels ``E_n = hbar omega (n + 1/2)``;
* the coherent state ``|alpha>``, ``a|alpha> = alpha|alpha>``, is the displaced ground state:
  a Gaussian with ``Delta x = sqrt(hbar / (2 m omega))``, centre ``x0`` and mean momentum ``p0``,
  ``alpha = sqrt(m omega / 2 hbar) (x0 + i p0 / (m omega))``. Under harmonic evolution it stays a
  minimum-uncertainty state, ``Delta x Delta p = hbar / 2`` at all times, and its centre follows
  the classical orbit (``alpha(t) = alpha e^{-i omega t}``);
* ``a = sqrt(m omega / 2 hbar) (x + i p / (m omega))``, ``a^dagger`` its adjoint,
  ``[a, a^dagger] = 1``, ``H = hbar omega (a^dagger a + 1/2)``.

The documents' identity table pairs these with trained models (``|alpha>``) and the
global optimum (``|0>``); that pairing is the documents' reading, the formulas here are
textbook quantum mechanics.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .._validation import check_int, check_positive
from .grid import Grid

__all__ = ["ho_levels", "ho_potential", "coherent_state", "coherent_alpha", "uncertainty",
           "momentum_matrix", "ladder_operators", "number_operator"]


def ho_levels(n: int, hbar: float = 1.0, omega: float = 1.0) -> np.ndarray:
    """``hbar omega (k + 1/2)`` for ``k = 0..n-1`` (1-D, exact)."""
    n = check_int("n", n, minimum=1)
    return check_positive("hbar", hbar) * check_positive("omega", omega) * (np.arange(n) + 0.5)


def ho_potential(grid: Grid, m: float = 1.0, omega=1.0, center=None) -> np.ndarray:
    """``sum_k m omega_k^2 (x_k - c_k)^2 / 2`` on the grid (``omega`` scalar or per axis)."""
    om = np.broadcast_to(np.asarray(omega, dtype=np.float64), (grid.dim,))
    c = np.zeros(grid.dim) if center is None else np.broadcast_to(np.asarray(center, dtype=np.float64), (grid.dim,))
    return sum(0.5 * m * w * w * (x - ck) ** 2 for x, w, ck in zip(grid.mesh(), om, c))


def coherent_state(grid: Grid, x0, p0=0.0, hbar: float = 1.0, m: float = 1.0, omega=1.0,
                   dtype=np.complex128) -> np.ndarray:
    """The coherent state centred at ``x0`` with mean momentum ``p0``: a Gaussian of width
    ``Delta x = sqrt(hbar/(2 m omega))`` per axis (exact)."""
    om = np.broadcast_to(np.asarray(omega, dtype=np.float64), (grid.dim,))
    width = np.sqrt(hbar / (2.0 * m * om))
    return grid.gaussian_packet(x0, width, p0, hbar=hbar, dtype=dtype)


def coherent_alpha(x0: float, p0: float, hbar: float = 1.0, m: float = 1.0, omega: float = 1.0) -> complex:
    """``alpha = sqrt(m omega / 2 hbar) (x0 + i p0 / (m omega))``."""
    return math.sqrt(m * omega / (2 * hbar)) * (x0 + 1j * p0 / (m * omega))


def uncertainty(grid: Grid, psi, hbar: float = 1.0) -> dict:
    """Means and standard deviations of position and momentum per axis, with momentum from
    the FFT (spectral, exact for band-limited states). Returns a dict of arrays
    ``x_mean, p_mean, dx, dp, product`` (``product = dx * dp``)."""
    prob = np.abs(psi) ** 2
    prob = prob / prob.sum()
    phik = np.fft.fftn(psi, norm="ortho")
    pk = np.abs(phik) ** 2
    pk = pk / pk.sum()
    xm, dxs, pm, dps = [], [], [], []
    for x, k in zip(grid.mesh(), grid.k_mesh()):
        mx = np.sum(x * prob)
        xm.append(mx)
        dxs.append(math.sqrt(max(np.sum((x - mx) ** 2 * prob), 0.0)))
        p = hbar * k
        mp = np.sum(p * pk)
        pm.append(mp)
        dps.append(math.sqrt(max(np.sum((p - mp) ** 2 * pk), 0.0)))
    dxs, dps = np.array(dxs), np.array(dps)
    return {"x_mean": np.array(xm), "p_mean": np.array(pm), "dx": dxs, "dp": dps, "product": dxs * dps}


def momentum_matrix(n: int, dx: float, hbar: float = 1.0) -> sp.csr_matrix:
    """``p = -i hbar d/dx`` by the 4th-order central difference (Dirichlet), Hermitian."""
    c1, c2 = 2.0 / 3.0, -1.0 / 12.0
    D1 = sp.diags([np.full(n - 2, -c2), np.full(n - 1, -c1), np.full(n - 1, c1), np.full(n - 2, c2)],
                  [-2, -1, 1, 2], shape=(n, n)) / dx
    return (-1j * hbar * D1).tocsr()


def ladder_operators(grid: Grid, hbar: float = 1.0, m: float = 1.0, omega: float = 1.0, center: float = 0.0):
    """``(a, a_dagger)`` on a 1-D grid as sparse matrices acting on ``psi`` (finite differences;
    ``a|0> = 0`` and ``a^dagger a |n> = n |n>`` hold to the stencil's accuracy)."""
    if grid.dim != 1:
        raise ValueError(f"ladder_operators are built on 1-D grids, got dim={grid.dim}")
    n = grid.shape[0]
    x = sp.diags(grid.axes[0] - center)
    p = momentum_matrix(n, float(grid.dx[0]), hbar)
    s = math.sqrt(m * omega / (2.0 * hbar))
    a = (s * (x + 1j * p / (m * omega))).tocsr()
    return a, a.conj().T.tocsr()


def number_operator(grid: Grid, hbar: float = 1.0, m: float = 1.0, omega: float = 1.0, center: float = 0.0):
    """``a^dagger a`` on a 1-D grid."""
    a, ad = ladder_operators(grid, hbar, m, omega, center)
    return (ad @ a).tocsr()
