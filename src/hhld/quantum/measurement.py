"""Section 5 of the paper in a finite position basis ``{|q_1>, ..., |q_M>}`` (5.1).

All objects are dense ``(M, M)`` matrices (``M`` up to a few thousand); Hamiltonians are
Hermitian matrices (e.g. ``hamiltonian_matrix(grid, V).toarray()``) and propagators
``exp(-i t H / hbar)`` are built from ``scipy.linalg.eigh`` (exactly unitary to round-off)
or ``scipy.linalg.expm``.

Equations (the paper's forms; in a finite basis they are exact linear algebra):

* (5.2) pure state ``|Psi> = sum_i Psi_i |q_i>``; (5.3) mixed ``rho = sum_i p_i |q_i><q_i|``;
* (5.4) pre-evolution ``|Psi(0)> = exp(-i t_- H_- / hbar) |q_j>``;
* (5.5) main evolution ``|Psi(T)> = exp(-i T H / hbar) |Psi(0)>``;
* (5.6) ``rho(0) = exp(-i t_- H_-/hbar) rho exp(+i t_- H_-/hbar)`` (in general non-diagonal);
* (5.7) measurement operators ``O_m``, (5.9) completeness ``sum_m O_m^dagger O_m = I``;
* (5.8) ``p(m) = <Psi| O_m^dagger O_m |Psi>``; (5.10) for diagonal ``D_m``:
  ``p(m) = sum_i |D_ii^(m)|^2 |Psi_i|^2``; (5.11) ``p(m) = sum_i |sum_j O_ij^(m) Psi_j|^2``;
* (5.12) post-evolution ``|Psi(T + t_+)> = exp(-i t_+ H_+ / hbar) |Psi(T)>``; (5.13) ``p(m)`` of
  ``D_m`` measured after it; (5.16) the effective non-diagonal operators
  ``O_m = exp(i t_+ H_+/hbar) D_m exp(-i t_+ H_+/hbar)``, with (5.13) = (5.15): both ways agree.

Note: with ``U = exp(-i t_+ H_+/hbar)``, (5.16) gives ``O_m |Psi> = U^dagger D_m U |Psi>``, so
``||O_m Psi||^2 = ||D_m U Psi||^2``: (5.8), (5.11) and (5.13)/(5.15) are the same number
(an exact identity; the tests check it to round-off).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.linalg as sla

from .._validation import check_int, check_positive

__all__ = [
    "basis_state", "pure_state", "density_matrix", "mixed_state", "is_density_matrix",
    "propagator", "pre_evolve", "pre_evolve_mixed", "evolve_state", "evolve_density",
    "post_evolve", "position_projectors", "effective_operators", "completeness_defect",
    "probabilities_diagonal", "probabilities_operators", "probabilities_components",
    "probabilities_post_evolution", "probabilities_density",
]


def _check_hermitian(H, name="H"):
    H = np.asarray(H)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {H.shape}")
    scale = max(1.0, float(np.abs(H).max()))
    if not np.allclose(H, H.conj().T, atol=1e-12 * scale, rtol=0):
        raise ValueError(f"{name} must be Hermitian")
    return H


def basis_state(M: int, j: int, dtype=np.complex128) -> np.ndarray:
    """The position eigenstate ``|q_j>`` (5.1)."""
    M = check_int("M", M, minimum=1)
    if not 0 <= j < M:
        raise ValueError(f"j must be in [0, {M}), got {j}")
    e = np.zeros(M, dtype=dtype)
    e[j] = 1.0
    return e


def pure_state(amplitudes) -> np.ndarray:
    """The normalised superposition (5.2) ``sum_i Psi_i |q_i>`` (unit Euclidean norm)."""
    psi = np.asarray(amplitudes)
    if not np.iscomplexobj(psi):
        psi = psi.astype(np.complex128)
    n = np.linalg.norm(psi)
    if n == 0 or not np.isfinite(n):
        raise ValueError("state must have a finite non-zero norm")
    return psi / n


def density_matrix(psi) -> np.ndarray:
    """``|Psi><Psi|`` of a pure state."""
    psi = pure_state(psi)
    return np.outer(psi, psi.conj())


def mixed_state(p) -> np.ndarray:
    """(5.3) ``rho = sum_i p_i |q_i><q_i|`` (``p >= 0``, normalised here)."""
    p = np.asarray(p, dtype=np.float64)
    if np.any(p < 0) or p.sum() <= 0:
        raise ValueError("probabilities must be >= 0 with a positive sum")
    return np.diag(p / p.sum()).astype(np.complex128)


def is_density_matrix(rho, atol: float = 1e-10) -> bool:
    """Hermitian, unit trace, positive semi-definite."""
    rho = np.asarray(rho)
    if not np.allclose(rho, rho.conj().T, atol=atol):
        return False
    if abs(np.trace(rho) - 1) > atol:
        return False
    return bool(np.linalg.eigvalsh(rho).min() > -atol)


def propagator(H, t: float, hbar: float = 1.0, *, method: str = "eigh") -> np.ndarray:
    """``exp(-i t H / hbar)`` (``method="eigh"``: spectral, unitary to round-off; ``"expm"``)."""
    H = _check_hermitian(H)
    hbar = check_positive("hbar", hbar)
    if method == "expm":
        return sla.expm(-1j * t * H / hbar)
    if method != "eigh":
        raise ValueError(f"method must be 'eigh' or 'expm', got {method!r}")
    w, v = sla.eigh(H)
    return (v * np.exp(-1j * t * w / hbar)) @ v.conj().T


def pre_evolve(H_minus, t_minus: float, j_or_state, hbar: float = 1.0) -> np.ndarray:
    """(5.4) ``exp(-i t_- H_- / hbar) |q_j>`` (``j_or_state``: an index or a state vector)."""
    M = np.asarray(H_minus).shape[0]
    psi = basis_state(M, int(j_or_state)) if np.ndim(j_or_state) == 0 else pure_state(j_or_state)
    return propagator(H_minus, t_minus, hbar) @ psi


def pre_evolve_mixed(H_minus, t_minus: float, p, hbar: float = 1.0) -> np.ndarray:
    """(5.6) ``U rho U^dagger`` with ``rho`` the diagonal mixed state (5.3) of ``p``."""
    U = propagator(H_minus, t_minus, hbar)
    return U @ mixed_state(p) @ U.conj().T


def evolve_state(H, T: float, psi, hbar: float = 1.0) -> np.ndarray:
    """(5.5) ``exp(-i T H / hbar) |Psi(0)>``."""
    return propagator(H, T, hbar) @ np.asarray(psi)


def evolve_density(H, T: float, rho, hbar: float = 1.0) -> np.ndarray:
    U = propagator(H, T, hbar)
    return U @ np.asarray(rho) @ U.conj().T


def post_evolve(H_plus, t_plus: float, psi, hbar: float = 1.0) -> np.ndarray:
    """(5.12) ``exp(-i t_+ H_+ / hbar) |Psi(T)>``."""
    return propagator(H_plus, t_plus, hbar) @ np.asarray(psi)


def position_projectors(M: int, n_bins: int | None = None, edges: Sequence[int] | None = None) -> list[np.ndarray]:
    """Diagonal measurement operators ``D_m``: projectors on contiguous blocks of basis states
    (``n_bins`` equal blocks, or block boundaries ``edges``); ``sum D_m^dagger D_m = I``."""
    M = check_int("M", M, minimum=1)
    if edges is None:
        n_bins = check_int("n_bins", n_bins if n_bins is not None else M, minimum=1)
        edges = np.linspace(0, M, n_bins + 1).round().astype(int)
    edges = np.asarray(edges, dtype=int)
    if edges[0] != 0 or edges[-1] != M or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must increase strictly from 0 to M={M}, got {edges.tolist()}")
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        d = np.zeros(M)
        d[a:b] = 1.0
        out.append(np.diag(d).astype(np.complex128))
    return out


def effective_operators(D_list, H_plus, t_plus: float, hbar: float = 1.0) -> list[np.ndarray]:
    """(5.16) ``O_m = exp(i t_+ H_+/hbar) D_m exp(-i t_+ H_+/hbar)`` (non-diagonal in general)."""
    U = propagator(H_plus, t_plus, hbar)
    Ud = U.conj().T
    return [Ud @ np.asarray(D) @ U for D in D_list]


def completeness_defect(O_list) -> float:
    """``max |sum_m O_m^dagger O_m - I|`` (5.9)."""
    S = sum(np.asarray(O).conj().T @ np.asarray(O) for O in O_list)
    return float(np.max(np.abs(S - np.eye(S.shape[0]))))


def probabilities_operators(psi, O_list) -> np.ndarray:
    """(5.8) ``p(m) = <Psi| O_m^dagger O_m |Psi>`` (real part; the imaginary part is round-off)."""
    psi = np.asarray(psi)
    return np.array([np.real(np.vdot(psi, np.asarray(O).conj().T @ (np.asarray(O) @ psi))) for O in O_list])


def probabilities_components(psi, O_list) -> np.ndarray:
    """(5.11) ``p(m) = sum_i |sum_j O_ij^(m) Psi_j|^2``."""
    psi = np.asarray(psi)
    return np.array([np.sum(np.abs(np.asarray(O) @ psi) ** 2) for O in O_list])


def probabilities_diagonal(psi, D_list) -> np.ndarray:
    """(5.10) ``p(m) = sum_i |D_ii^(m)|^2 |Psi_i|^2`` (diagonal ``D_m`` only)."""
    prob = np.abs(np.asarray(psi)) ** 2
    out = []
    for D in D_list:
        D = np.asarray(D)
        if np.count_nonzero(D - np.diag(np.diag(D))):
            raise ValueError("probabilities_diagonal needs diagonal measurement operators D_m")
        out.append(np.sum(np.abs(np.diag(D)) ** 2 * prob))
    return np.array(out)


def probabilities_post_evolution(psi, D_list, H_plus, t_plus: float, hbar: float = 1.0) -> np.ndarray:
    """(5.13) post-evolve with ``H_+`` for ``t_+`` (5.12), then measure the diagonal ``D_m`` (5.10)."""
    return probabilities_diagonal(post_evolve(H_plus, t_plus, psi, hbar), D_list)


def probabilities_density(rho, O_list) -> np.ndarray:
    """``p(m) = Tr(O_m rho O_m^dagger)``: (5.8) for a mixed state such as (5.6)."""
    rho = np.asarray(rho)
    return np.array([np.real(np.trace(np.asarray(O) @ rho @ np.asarray(O).conj().T)) for O in O_list])
