"""The exact Fokker-Planck <-> imaginary-time Schrodinger map, continuum and discrete, with mobility ``mu``.

Continuum (exact result). The Fokker-Planck equation

    d rho / dt = mu div(grad L rho) + D lap rho  =: -G rho,   rho* ∝ exp(-mu L / D),

becomes, with ``rho = exp(-U / 2) psi`` and ``U = mu L / D``,

    d psi / dt = -H psi,   H = -D lap + mu^2 |grad L|^2 / (4D) - mu lap L / 2,

an imaginary-time Schrodinger equation with ``hbar^2/(2m) = D`` (and ``hbar = 1``
for the time unit). ``H`` is symmetric and non-negative, ``H sqrt(rho*) = 0``: its ground
state is ``sqrt(rho*)`` with eigenvalue 0, and ``spec(G) = spec(H)`` (real, ``>= 0``).

Discrete (exact on the grid). The generator is the Fokker-Planck operator of
:mod:`hhld.fokker_planck.operator` with the square-root-approximation flux (``scheme="sqra"``)
between neighbouring cells ``i, j``::

    J_{i->j} = (D / dx^2) sqrt(pi_i pi_j) (rho_i / pi_i - rho_j / pi_j),   pi = exp(-U),

with no flux through the box faces. It conserves mass to round-off, ``G pi = 0`` exactly,
and ``G`` is self-adjoint in the ``1/pi``-weighted inner product. The Schrodinger map is that
operator's symmetrised form (:func:`hhld.fokker_planck.build_symmetric`): the similarity
transform ``H_h = -Pi^{-1/2} A Pi^{1/2}`` is exact and gives

    H_h = -D lap_h(neumann) + diag(V_h),
    V_h,i = (D / dx^2) sum_{j ~ i} (exp(-(U_j - U_i) / 2) - 1),

whose Taylor expansion is the continuum ``mu^2 |grad L|^2/(4D) - mu lap L / 2 + O(dx^2)``. So on
the grid ``spec(G) = spec(H_h)`` to round-off, ``H_h sqrt(pi) = 0`` exactly, and the Schrodinger
operator with the continuum potential agrees to ``O(dx^2)``. The grid is :class:`hhld.grid.Grid`,
the Gibbs density :func:`hhld.fokker_planck.stationary.gibbs_density`, and the box check
:func:`hhld.fokker_planck.stationary.check_gibbs_box`: the same as the Fokker-Planck solvers'.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._validation import NonFiniteError, check_choice, check_int, check_positive
from ..fokker_planck import stationary as _stationary
from ..fokker_planck.operator import build_generator, build_symmetric
from .eigen import laplacian_matrix
from .grid import Grid
from .schrodinger import potential_on_grid

__all__ = [
    "fp_generator",
    "neumann_laplacian",
    "mapped_potential_discrete",
    "mapped_potential_continuum",
    "mapped_hamiltonian",
    "gibbs_density",
    "fp_spectrum",
    "schrodinger_spectrum",
    "compare_spectra",
    "SpectrumComparison",
    "fp_to_psi",
    "psi_to_fp",
    "evolve_fp",
    "evolve_fp_via_schrodinger",
]

_TRUNCATED = ("the spectra and evolutions on this box (no-flux walls) are those of the truncated problem, "
              "not of the whole space")


def _potential(grid: Grid, L, D: float, mu: float, check_box: bool = False) -> np.ndarray:
    """``U = mu L / D`` on the cell centres (shape ``grid.shape``); with ``check_box``, the
    box-truncation warning (e.g. the OU process at D = 2 on [-3, 3]: 0, 1.19, 3.00, 5.78 instead
    of 0, 1, 2, 3)."""
    D = check_positive("D", D)
    mu = check_positive("mu", mu)
    U = mu * potential_on_grid(grid, L).reshape(grid.shape) / D
    if check_box:
        _stationary.check_gibbs_box(grid, U, _TRUNCATED, stacklevel=4)
    return U


def gibbs_density(grid: Grid, L, D: float, mu: float = 1.0) -> np.ndarray:
    """``rho* = exp(-mu L/D) / Z`` on the grid (normalised so that ``sum rho dV = 1``): the Gibbs
    density of :mod:`hhld.fokker_planck.stationary`."""
    return _stationary.gibbs_density(grid, _potential(grid, L, D, mu))


def fp_generator(grid: Grid, L, D: float, mu: float = 1.0) -> sp.csr_matrix:
    """The sparse FP operator ``A`` with ``d rho/dt = A rho`` (``A = -G``), no-flux walls,
    square-root-approximation fluxes (:func:`hhld.fokker_planck.build_generator` with
    ``scheme="sqra"``); columns sum to zero (mass conservation). A ``mu L/D`` so steep between
    neighbouring cells that the rates overflow is a ``ValueError`` (use a larger D or more points)."""
    U = _potential(grid, L, D, mu, check_box=True)
    with np.errstate(over="ignore", invalid="ignore"):
        A = build_generator(grid, U, D, dtype=np.float64, scheme="sqra")
    if not np.isfinite(A.data).all():
        jump = max(float(np.abs(np.diff(U, axis=k)).max()) for k in range(grid.dim))
        raise ValueError(f"the Fokker-Planck rates overflow: mu L/D jumps by up to {jump:.3g} between neighbouring "
                         f"points (D={D!r}, grid {grid.shape}); use a larger D or more points")
    return A


def _on_grid(grid: Grid, x, name: str) -> np.ndarray:
    """``x`` as finite values of the grid's shape (a flat array of the right size is reshaped)."""
    a = np.asarray(x)
    if a.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a numeric array on the grid, got dtype {a.dtype}")
    if a.size != grid.size:
        raise ValueError(f"{name} must have {grid.size} values (grid shape {grid.shape}), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite value(s)", quantity=name)
    return a.reshape(grid.shape)


def _check_k(grid: Grid, k) -> int:
    k = check_int("k", k, minimum=1)
    if k > grid.size:
        raise ValueError(f"k must be at most the number of grid points ({grid.size}), got k={k}")
    return k


def neumann_laplacian(grid: Grid) -> sp.csr_matrix:
    """The graph Laplacian of the grid (no-flux walls), scaled by ``1/dx_k^2`` per axis: the
    symmetrised operator of a flat landscape with ``D = 1``."""
    return build_symmetric(grid, np.zeros(grid.shape), 1.0, scheme="sqra")


def mapped_potential_discrete(grid: Grid, L, D: float, mu: float = 1.0) -> np.ndarray:
    """``V_h`` (module doc): the diagonal of the exact image ``-S`` of the discrete FP generator,
    less that of ``-D lap_h``."""
    D = check_positive("D", D)
    S = build_symmetric(grid, _potential(grid, L, D, mu, check_box=True), D, scheme="sqra")
    return (-S.diagonal() + D * neumann_laplacian(grid).diagonal()).reshape(grid.shape)


def mapped_potential_continuum(grid: Grid, landscape, D: float, mu: float = 1.0) -> np.ndarray:
    """``mu^2 |grad L|^2 / (4D) - mu lap L / 2`` from a Landscape's gradient and Laplacian (exact
    continuum formula evaluated on the nodes)."""
    D = check_positive("D", D)
    mu = check_positive("mu", mu)
    g = grid.evaluate_grad(landscape)
    return mu * mu * (g * g).sum(0) / (4 * D) - 0.5 * mu * grid.evaluate_laplacian(landscape)


def mapped_hamiltonian(grid: Grid, L, D: float, *, mu: float = 1.0, potential: str = "discrete",
                       order: int = 2) -> sp.csr_matrix:
    """The Schrodinger operator of the map. ``"discrete"``: the exact similarity image ``-S`` of the
    FP generator (:func:`hhld.fokker_planck.build_symmetric`, ``scheme="sqra"``), i.e.
    ``-D lap_h + diag(V_h)`` with the Neumann 3-point Laplacian; ``"continuum"`` (needs a
    Landscape): ``-D lap + diag(V)`` with the continuum potential, ``order`` 2: the Neumann 3-point
    Laplacian, ``O(dx^2)``; 4: the 5-point Laplacian with ``psi = 0`` outside the box, ``O(dx^4)``,
    for boxes on which ``sqrt(rho*)`` has decayed."""
    check_choice("order", order, (2, 4))
    if potential == "discrete":
        if order != 2:
            raise ValueError("the discrete image is exact with the 3-point Laplacian only: order must be 2")
        D = check_positive("D", D)
        return (-build_symmetric(grid, _potential(grid, L, D, mu, check_box=True), D, scheme="sqra")).tocsr()
    if potential != "continuum":
        raise ValueError(f"potential must be 'discrete' or 'continuum', got {potential!r}")
    V = mapped_potential_continuum(grid, L, D, mu)
    lap = neumann_laplacian(grid) if order == 2 else laplacian_matrix(grid, "dirichlet", 4)
    return (-D * lap + sp.diags(V.ravel())).tocsr()


def _low_eigs_sym(H, k):
    n = H.shape[0]
    if n <= 300 or k >= n - 1:
        w, v = np.linalg.eigh(H.toarray())
        return w[:k], v[:, :k]
    w, v = spla.eigsh(H, k=k, sigma=-1e-8, which="LM", tol=1e-14,
                      v0=np.random.default_rng(0).standard_normal(n))  # fixed start: deterministic
    i = np.argsort(w)
    return w[i], v[:, i]


def fp_spectrum(grid: Grid, L, D: float, k: int = 6, *, mu: float = 1.0) -> np.ndarray:
    """The ``k`` lowest relaxation rates ``lambda_n`` (eigenvalues of ``-A``), computed from the
    non-symmetric FP generator itself (dense ``eig`` for small grids, shift-invert ARPACK
    ``eigs`` otherwise), sorted ascending; real parts (the imaginary parts are round-off and
    their size is reported by :func:`compare_spectra`)."""
    k = _check_k(grid, k)
    A = fp_generator(grid, L, D, mu)
    if grid.size <= 300 or k >= grid.size - 2:
        w = np.linalg.eigvals(-A.toarray())
    else:
        w = spla.eigs(-A, k=k, sigma=-1e-8, which="LM", tol=1e-14, return_eigenvectors=False,
                      v0=np.random.default_rng(0).standard_normal(grid.size))  # fixed start: deterministic
    w = w[np.argsort(w.real)][:k]
    return w


def schrodinger_spectrum(grid: Grid, L, D: float, k: int = 6, *, mu: float = 1.0, potential: str = "discrete",
                         order: int = 2):
    """``(E, psi)``: the ``k`` lowest eigenpairs of the mapped Hamiltonian (``order``: see
    :func:`mapped_hamiltonian`); ``psi`` of shape ``(k, *grid.shape)`` normalised as wave functions
    (``sum psi^2 dV = 1``), ground state positive."""
    k = _check_k(grid, k)
    H = mapped_hamiltonian(grid, L, D, mu=mu, potential=potential, order=order)
    E, v = _low_eigs_sym(H, k)
    psi = v.T.reshape(k, *grid.shape) / np.sqrt(grid.dV)
    if psi[0].sum() < 0:
        psi[0] = -psi[0]
    return E, psi


@dataclass
class SpectrumComparison:
    fp: np.ndarray               # relaxation rates from the FP generator (real parts)
    fp_max_imag: float           # largest |imag| of the FP eigenvalues (round-off)
    schrodinger: np.ndarray      # mapped H, discrete potential (exact image)
    continuum: np.ndarray | None  # mapped H with the continuum potential (O(dx^4), or O(dx^2) with order 2)
    max_abs_diff: float          # |fp - schrodinger|_inf
    ground_state_error: float    # max |psi_0 - sqrt(rho*)| / max sqrt(rho*)

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def compare_spectra(grid: Grid, L, D: float, k: int = 6, *, mu: float = 1.0,
                    continuum_order: int = 4) -> SpectrumComparison:
    """Both spectra on the same grid (and the continuum-potential one when ``L`` is a
    Landscape, with the ``continuum_order`` Laplacian: 4 by default, 2 for the 3-point one), plus
    the check that the ground state of ``H`` is ``sqrt(rho*)``."""
    check_choice("continuum_order", continuum_order, (2, 4))
    w = fp_spectrum(grid, L, D, k, mu=mu)
    E, psi = schrodinger_spectrum(grid, L, D, k, mu=mu)
    cont = None
    if hasattr(L, "grad") and hasattr(L, "laplacian"):
        cont, _ = schrodinger_spectrum(grid, L, D, k, mu=mu, potential="continuum", order=continuum_order)
    s = np.sqrt(gibbs_density(grid, L, D, mu))
    s = s / grid.norm(s)
    gs_err = float(np.max(np.abs(psi[0] - s)) / np.max(s))
    return SpectrumComparison(w.real.copy(), float(np.max(np.abs(w.imag))), E, cont,
                              float(np.max(np.abs(w.real - E))), gs_err)


def fp_to_psi(grid: Grid, rho, L, D: float, mu: float = 1.0) -> np.ndarray:
    """``psi = exp(mu L/2D) rho`` (up to the constant factor ``exp(-mu min L / 2D)``)."""
    U = _potential(grid, L, D, mu)
    return _on_grid(grid, rho, "rho") * np.exp((U - U.min()) / 2)


def psi_to_fp(grid: Grid, psi, L, D: float, mu: float = 1.0) -> np.ndarray:
    """``rho = exp(-mu L/2D) psi`` (inverse of :func:`fp_to_psi`)."""
    U = _potential(grid, L, D, mu)
    return _on_grid(grid, psi, "psi") * np.exp(-(U - U.min()) / 2)


def evolve_fp(grid: Grid, rho0, L, D: float, times, mu: float = 1.0) -> np.ndarray:
    """``rho(t) = exp(t A) rho0`` at the given times (``expm_multiply``), shape ``(nt, *shape)``."""
    times = np.asarray(times, dtype=np.float64).ravel()
    if times.size == 0 or not np.isfinite(times).all() or (times < 0).any():
        raise ValueError(f"times must be one or more finite times >= 0, got {times.tolist()}")
    r0 = _on_grid(grid, rho0, "rho0").astype(np.float64).ravel()
    A = fp_generator(grid, L, D, mu).tocsc()
    out = np.empty((times.size, *grid.shape))
    for i, t in enumerate(times):
        out[i] = spla.expm_multiply(t * A, r0).reshape(grid.shape)
    return out


def evolve_fp_via_schrodinger(grid: Grid, rho0, L, D: float, times, mu: float = 1.0) -> np.ndarray:
    """The same evolution through the map: ``rho(t) = Pi^{1/2} exp(-t H_h) Pi^{-1/2} rho0``,
    with ``exp(-t H_h)`` from the eigendecomposition of ``H_h`` (dense; small grids)."""
    if grid.size > 4000:
        raise ValueError(f"evolve_fp_via_schrodinger is dense; grid has {grid.size} > 4000 points")
    H = mapped_hamiltonian(grid, L, D, mu=mu).toarray()
    w, v = np.linalg.eigh(H)
    psi0 = fp_to_psi(grid, rho0, L, D, mu).ravel()
    c = v.T @ psi0
    times = np.asarray(times, dtype=np.float64)
    psis = (v @ (np.exp(-np.outer(w, times)) * c[:, None])).T
    return np.stack([psi_to_fp(grid, p.reshape(grid.shape), L, D, mu) for p in psis])
