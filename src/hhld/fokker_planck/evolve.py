r"""Time evolution ``rho(t) = exp(t A) rho0`` of the discrete master equation.

Four integrators that are exact in time up to a stated tolerance (no time-step error):

* ``"chebyshev"``: the Chebyshev expansion of ``exp`` on the spectral interval.
  ``A`` is similar to the symmetric ``S`` and its columns sum to 0, so by Gershgorin its
  spectrum lies in ``[-||A||_1, 0]``; with ``rho = t ||A||_1``,
  :math:`e^{tA} = \sum_k c_k T_k(2tA/\rho + I)`, ``c_k = (2 - \delta_{k0}) e^{-\rho/2} I_k(\rho/2)``
  (modified Bessel functions). The series is cut where the coefficient tail falls below
  ``1e-17``, which takes ``m ~ sqrt(32 rho)`` terms, each one sparse matrix-vector
  product: the cost grows only like ``sqrt(||A|| t)`` (``expm_multiply``'s like
  ``||A|| t``) and needs no factorisation. Mass is conserved (``1^T T_k(B) = 1^T``) up to
  ``|p(0) - 1| ~ 1e-17`` and round-off; for a generator with zero column sums
  :func:`evolve_generator` rescales the result to the input mass (removing the round-off
  drift of the mass). Accuracy in double precision: ~1e-13 in L1 on the benchmark
  problems (rounding of the recurrence, not truncation; measured against an
  extended-precision evaluation).
* ``"expm"``: :func:`scipy.sparse.linalg.expm_multiply` (truncated Taylor series with
  scaling; its cost grows like ``||A||_1 * t``, fine for small grids or short times).
* ``"cram"``: the degree-16 Chebyshev rational approximation of ``exp`` on ``(-inf, 0]``
  (CRAM-16; best uniform approximation, error ~``9.29^-16``):
  :math:`e^{x} \approx \alpha_0 + 2\,\mathrm{Re}\sum_{k=1}^{8} c_k/(x - \theta_k)`.
  The spectrum of ``tA`` is real and ``<= 0`` (``A`` is similar to the symmetric ``S``),
  so ``exp(tA) v`` costs **8** complex sparse LU factorisations (one per conjugate pair
  of poles). The poles ``theta_k`` are the published CRAM-16 poles (M. Pusa, Nucl. Sci.
  Eng. 182 (2016) 297); the partial-fraction residues ``c_k`` and ``alpha_0`` were fitted
  here by Lawson-weighted least squares on ``(-1e7, 0]``: max error 3.4e-14 in double
  precision, checked in ``tests/fokker_planck``.
* ``"contour"``: the Bromwich / Cauchy integral
  :math:`e^{tA} = \frac{1}{2\pi i}\oint_\Gamma e^{z}\,(z - tA)^{-1}\,dz` on the
  Weideman-Trefethen parabola :math:`z(\theta) = N(0.1309 - 0.1194\,\theta^2 + 0.25\,i\theta)`
  with the ``N``-point midpoint rule (error about :math:`2.85^{-N}`). Conjugate symmetry
  halves the work: ``N/2`` factorisations (16 for the default ``N = 32``, twice CRAM's);
  kept as an independent check (its error is tunable by ``N``).

For both rational methods the factorisations are reused for equally spaced snapshots and
their cost does not grow with ``||A|| t``, which is what makes long evolutions on fine
grids cheap. The shifted matrices ``z I - tA`` are factorised by SuperLU *without* row
pivoting in symmetric mode (``A = G^{1/2} S G^{-1/2}``, so the pivots are those of the
complex-symmetric ``z I - tS``, whose imaginary part ``Im(z) I`` is positive definite:
every leading block is regular); each factorisation is checked by the residual of one
solve and redone with partial pivoting if that residual is not at round-off level.
No pivoting keeps the fill-reducing order intact and is ~1.3-2x faster.

Accuracy limit of the rational methods: the shifted systems ``z I - tA`` have condition
numbers ~``t ||A|| / |Im z|``, so their round-off error grows like ``eps t ||A||_1``
(~1e-12 on the benchmark's ``t ||A|| ~ 1e4``, but ~1e-6 at ``t = 1e9`` on a metastable
double well); for ``t -> inf`` use the stationary state instead. Nearly all of that error lies
along the stationary state, i.e. it is an error of the total mass (measured on the 128-cell
double well at D = 0.1: mass 1.00024 at ``t = 1e10``, 1.0465 at ``t = 1e12``, while the
normalised result was within 3e-14 of the Gibbs density in L1); for a generator with zero column
sums :func:`evolve_generator` therefore rescales every rational step to its input mass, which
keeps the mass to round-off at any ``t``.

``"auto"`` picks ``expm`` when ``||A||_1 * dt`` is small, ``chebyshev`` while its degree
is moderate (``m <= max(2000, 100 sqrt(n))``: a sparse LU costs hundreds to thousands of
matrix-vector products on 2-D/3-D grids) and ``cram`` for very long steps, whose cost does
not grow with ``t``.

Mass is conserved by all to round-off/tolerance (``1^T A = 0`` gives
``1^T (z - tA)^{-1} = 1^T / z``, so the rational methods scale the mass by ``r(0)``,
``|r(0) - 1| < 5e-15`` for CRAM-16), and the integrators are checked against each other
in the tests.

The accuracies above hold for a generator close to normal. When the Gibbs density spans many
decades over the cells the density occupies (a flat start at small D), each method's error is
amplified in the density's basis (measured, 2-D double well, D = 0.05, flat start, t = 0.25, L1:
CRAM 7.7e-8, contour with 32 nodes 1.1e-8, expm 1.4e-12 on 96^2 cells; on 128^2 cells
Chebyshev returned -0.30 and CRAM -8.7e-11 on a density of largest value 0.70). Every step is
therefore checked after the fact (:func:`_step_problem`): a method asked for by name that
fails the check is refused with the reason; ``"auto"`` moves on (Chebyshev -> CRAM -> contour
-> expm) and refuses only when every method fails.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.special import ive

from .._validation import check_int

__all__ = ["evolve_generator", "chebyshev_expmv", "ContourPropagator", "CRAMPropagator",
           "RationalPropagator"]


#: CRAM-16 poles (Pusa 2016) and partial-fraction residues / constant (fitted, module docstring):
#: exp(x) ~ alpha0 + 2 Re sum_k c_k / (x - theta_k) on (-inf, 0].
_CRAM16_POLES = np.array([
    +3.509103608414918 + 8.436198985884374j, +5.948152268951177 + 3.587457362018322j,
    -5.264971343442647 + 16.22022147316793j, +1.419375897185666 + 10.92536348449672j,
    +6.416177699099435 + 1.194122393370139j, +4.993174737717997 + 5.996881713603942j,
    -1.413928462488886 + 13.49772569889275j, -10.84391707869699 + 19.27744616718165j,
])
_CRAM16_ALPHA0 = -3.21797714769471e-14
_CRAM16_RESIDUES = np.array([
    15.059585614393415 - 5.75140540720111j,
    113.39775068401065 + 101.9472167093389j,
    0.0002115225506504417 + 0.004389299309397631j,
    -1.4793007960196185 + 1.7686587251295411j,
    -64.50087719498771 - 224.59440878551194j,
    -62.518392437080095 - 11.19039035632072j,
    0.04102311599560943 - 0.15743463313187225j,
    -5.088601770581531e-07 - 2.42203925225103e-05j,
])


def _factor_shifted(At: sp.csc_matrix, eye: sp.csc_matrix, z: complex):
    """SuperLU of ``z I - At`` without pivoting (symmetric mode), checked by the residual of
    one solve; falls back to partial pivoting when that residual is not at round-off."""
    M = sp.csc_matrix(z * eye - At)
    try:
        lu = spla.splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options=dict(SymmetricMode=True))
        b = np.ones(M.shape[0], dtype=np.complex128)
        x = lu.solve(b)
        scale = float(abs(M).sum(axis=1).max()) * float(np.abs(x).max()) + 1.0
        if np.all(np.isfinite(x)) and float(np.abs(M @ x - b).max()) <= 1e-11 * scale:
            return lu
    except RuntimeError:  # an exactly singular pivot
        pass
    return spla.splu(M, permc_spec="MMD_AT_PLUS_A")


class RationalPropagator:
    """``v -> const * v + Re sum_k w_k (z_k I - dt A)^{-1} v`` with one LU per node ``z_k``.

    The nodes lie in the upper half plane; their conjugates are accounted for by taking the
    real part (the weights include the factor 2). :meth:`__call__` costs one complex
    triangular solve per node.
    """

    def __init__(self, A: sp.spmatrix, dt: float, nodes, weights, const: float = 0.0):
        self.dt = float(dt)
        self.nodes = np.asarray(nodes, dtype=np.complex128)
        self.weights = np.asarray(weights, dtype=np.complex128)
        self.const = float(const)
        n = A.shape[0]
        At = sp.csc_matrix(A, dtype=np.complex128) * self.dt
        eye = sp.identity(n, dtype=np.complex128, format="csc")
        self._lu = [_factor_shifted(At, eye, zk) for zk in self.nodes]

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        out = self.const * v
        vc = v.astype(np.complex128)
        for w, lu in zip(self.weights, self._lu):
            out += (w * lu.solve(vc)).real
        return out


class ContourPropagator(RationalPropagator):
    """``v -> exp(dt A) v`` by an ``n_points``-point parabolic contour rule
    (``n_points/2`` factorisations, module docstring)."""

    def __init__(self, A: sp.spmatrix, dt: float, n_points: int = 32):
        n_points = check_int("n_points", n_points, minimum=2)
        if n_points % 2:
            raise ValueError(f"n_points must be even, got {n_points}")
        N = int(n_points)
        h = 2 * np.pi / N
        theta = -np.pi + (np.arange(N) + 0.5) * h
        theta = theta[theta > 0]                     # upper half; lower half = conjugates
        z = N * (0.1309 - 0.1194 * theta ** 2 + 0.25j * theta)
        dz = N * (-2 * 0.1194 * theta + 0.25j)
        # (h / 2 pi i) * e^z * z'(theta), times 2 for the conjugate half (real part taken)
        weights = 2 * (h / (2j * np.pi)) * np.exp(z) * dz
        super().__init__(A, dt, z, weights)


class CRAMPropagator(RationalPropagator):
    """``v -> exp(dt A) v`` by CRAM-16 (8 factorisations, error ~3e-14; module docstring)."""

    def __init__(self, A: sp.spmatrix, dt: float):
        # alpha0 + 2 Re sum c_k / (x - theta_k) = alpha0 + Re sum (-2 c_k) / (theta_k - x)
        super().__init__(A, dt, _CRAM16_POLES, -2.0 * _CRAM16_RESIDUES, const=_CRAM16_ALPHA0)


#: tail of the Chebyshev coefficients at which the series is cut
CHEBYSHEV_TOL = 1e-17
#: largest ``t ||A||_1`` of one Chebyshev step (~1.8e6 products; the coefficient array stays < 50 MB)
CHEBYSHEV_MAX_RHO = 1e11


def chebyshev_degree(rho: float, tol: float = CHEBYSHEV_TOL) -> tuple[int, np.ndarray]:
    """``(m, c)``: the number of terms and the coefficients ``c_0..c_{m-1}`` of the Chebyshev
    series of ``exp`` on ``[-rho, 0]`` (module docstring) with coefficient tail ``< tol``."""
    x = 0.5 * float(rho)
    if not np.isfinite(x) or x > CHEBYSHEV_MAX_RHO / 2:
        raise ValueError(f"t ||A||_1 = {rho:.3g} is too large for the Chebyshev method (about "
                         f"{np.sqrt(32 * rho):.3g} sparse products, limit t ||A||_1 <= {CHEBYSHEV_MAX_RHO:.0e}); "
                         f"use method='cram' (its cost does not grow with t) or 'auto'")
    K = int(np.sqrt(2.0 * x * 45.0)) + 64            # e^{-k^2/2x} < 1e-19 beyond this
    c = ive(np.arange(K), x)
    c[1:] *= 2.0
    tail = np.cumsum(c[::-1])[::-1]
    below = np.nonzero(tail < tol)[0]
    m = int(below[0]) if below.size else K
    return max(m, 2), c[:max(m, 2)]


def chebyshev_expmv(A: sp.spmatrix, v: np.ndarray, t: float, norm1: float | None = None,
                    tol: float = CHEBYSHEV_TOL, conserve_mass: bool = False) -> np.ndarray:
    """``exp(t A) v`` by the Chebyshev series on ``[-t ||A||_1, 0]`` (module docstring).

    Requires the spectrum of ``A`` to be real and in ``[-||A||_1, 0]``: true for any
    generator with detailed balance (zero column sums, similar to a symmetric matrix), in
    particular for :class:`hhld.fokker_planck.FokkerPlanck`'s. ``conserve_mass``: rescale
    the result to ``sum(v)``, which ``exp(tA)`` conserves exactly when the columns of ``A``
    sum to 0; this removes the round-off drift of the mass accumulated over the ``m``
    steps (most of the rounding error: 8e-13 -> 1e-13 in L1 on the 256^2 benchmark)."""
    A = sp.csr_matrix(A)
    v = np.asarray(v, dtype=np.float64).ravel()
    if norm1 is None:
        norm1 = float(abs(A).sum(axis=0).max())
    rho = float(t) * norm1
    if rho == 0.0:
        return v.copy()
    m, c = chebyshev_degree(rho, tol)
    s = 2.0 * float(t) / rho                          # B = s A + I maps the spectrum to [-1, 1]
    t_prev = v.copy()
    t_cur = A @ v
    t_cur *= s
    t_cur += v
    out = c[0] * t_prev + c[1] * t_cur
    two_s = 2.0 * s
    for k in range(2, m):                             # T_{k} = 2 B T_{k-1} - T_{k-2}
        w = A @ t_cur
        w *= two_s
        w += t_cur
        w += t_cur
        w -= t_prev
        out += c[k] * w
        t_prev, t_cur = t_cur, w
    if conserve_mass:
        m_in, m_out = float(v.sum()), float(out.sum())
        if m_in != 0.0 and m_out != 0.0 and np.isfinite(m_out):
            out *= m_in / m_out
    return out


#: a step's output entries below ``-STEP_NEGATIVE_TOL * max |v|`` (from a non-negative input) are not round-off
STEP_NEGATIVE_TOL = 1e-10


def _step_problem(v_in: np.ndarray, v_out: np.ndarray, conservative: bool) -> str | None:
    """A posteriori check of one step of any method: ``None``, or what is wrong.

    Each method is accurate on the spectrum, but the generator is far from normal when the Gibbs
    density spans many decades (``A = G^{1/2} S G^{-1/2}``, condition number of the similarity
    ``sqrt(max pi / min pi)``), and that amplifies a method's error in the density's own basis: a
    narrow start far up a steep well at small D gave the Chebyshev series -85 on a density of mass 1;
    a flat start on the 128-cell double well at D = 0.05 gave it -0.30 (max 0.70) at t = 0.25, and
    CRAM -8.7e-11 there (the contour rule -2.5e-16). ``exp(tA)`` keeps a non-negative vector
    non-negative and, with zero column sums, its mass; a step that breaks either beyond round-off
    (:data:`STEP_NEGATIVE_TOL`, the bound :func:`hhld.fokker_planck.functionals.check_density` reads as
    round-off; mass to 1e-9) is refused."""
    if not np.all(np.isfinite(v_out)):
        return f"{int((~np.isfinite(v_out)).sum())} non-finite entries"
    if np.all(v_in >= 0):
        scale = float(np.abs(v_out).max()) if v_out.size else 0.0
        low = float(v_out.min()) if v_out.size else 0.0
        if scale > 0 and low < -STEP_NEGATIVE_TOL * scale:
            return (f"a negative entry {low:.3g} from a non-negative input ({low / scale:.2g} of the largest, beyond "
                    f"round-off {STEP_NEGATIVE_TOL:g})")
    if conservative:
        m_in = float(v_in.sum())
        m_abs = float(np.abs(v_out).sum())
        if m_in != 0.0 and abs(m_abs - abs(m_in)) > 1e-9 * float(np.abs(v_in).sum()):
            return f"its absolute mass {m_abs:.12g} differs from the input's {abs(m_in):.12g}"
    return None


#: method="auto": the next method when a step fails :func:`_step_problem` (each more robust to a non-normal
#: generator, at a higher cost; expm_multiply last, when ``dt ||A||`` allows it)
_FALLBACK = {"chebyshev": "cram", "cram": "contour", "contour": "expm"}


def _rescale_mass(v_out: np.ndarray, v_in: np.ndarray) -> np.ndarray:
    """``v_out`` scaled to the mass ``sum(v_in)`` (exact for a generator with zero column sums)."""
    m_in, m_out = float(v_in.sum()), float(v_out.sum())
    if m_in != 0.0 and m_out != 0.0 and np.isfinite(m_out):
        v_out = v_out * (m_in / m_out)
    return v_out


def _chebyshev_is_cheaper(norm1: float, dt: float, n: int) -> bool:
    limit = max(2000.0, 100.0 * np.sqrt(n))
    if np.sqrt(norm1 * dt) > limit:  # the degree exceeds sqrt(rho): decided without the coefficients
        return False                 # (whose array would have ~sqrt(90 rho) entries: GBs at t ||A|| ~ 1e15)
    m, _ = chebyshev_degree(norm1 * dt)
    return m <= limit


#: largest ``dt ||A||`` for method='expm' (its cost grows like it), and for one rational (CRAM /
#: contour) step: beyond about 1e19 the shifted solves ``(dt A - theta)`` lose the shift to
#: round-off (A is singular) and the result goes wrong (measured on the double wells: L1 error
#: 1e-8 at 4e18, 1e-5 at 4e22, 2 at 4e52, with negative densities). A longer time is refused:
#: whether the state is stationary by then cannot be told apart from a mode slower than the
#: round-off bound eps ||A|| (a metastable state changes by less than round-off per step)
_EXPM_LIMIT = 1e7
_RATIONAL_LIMIT = 1e17


def _rational_step(A, v, dt, m, n_points, norm1, conservative, props):
    """``exp(dt A) v`` by the CRAM / contour propagator, for ``dt ||A|| <= _RATIONAL_LIMIT``."""
    if norm1 * dt > _RATIONAL_LIMIT:
        raise ValueError(f"cannot evolve over t = {dt:g}: the rational propagators are accurate up to t ||A|| = "
                         f"{_RATIONAL_LIMIT:g} (t = {_RATIONAL_LIMIT / norm1:.3g} here), and beyond it a mode slower "
                         f"than the round-off bound (about {2.2e-16 * norm1:.2g}) cannot be told from the stationary "
                         "state; use a smaller t, or FokkerPlanck.stationary() with the spectrum's relaxation rate "
                         "for t -> infinity")
    key = (m, round(dt, 12))
    if key not in props:
        props[key] = CRAMPropagator(A, dt) if m == "cram" else ContourPropagator(A, dt, n_points)
    out = props[key](v)
    # round-off drift of the mass grows like eps t ||A|| (module docstring)
    return _rescale_mass(out, v) if conservative else out


def _refused(tried, t, explicit=False) -> str:
    what = "; ".join(f"{m} gave {p}" for m, p in tried)
    fix = ("use method='auto' (it moves on to a more robust method: chebyshev -> cram -> contour -> expm)"
           if explicit else "the generator is too far from normal for double precision here (a Gibbs density "
           "spanning too many decades): a wider start, a larger D or a coarser time grid")
    return f"exp(tA) rho lost its accuracy in the step to t = {t:g}: {what}; {fix}"


def evolve_generator(A: sp.spmatrix, rho0: np.ndarray, times: Sequence[float], *,
                     method: str = "auto", n_points: int = 32,
                     callback: Callable[[int, float], None] | None = None) -> np.ndarray:
    """Snapshots ``exp(t A) rho0`` at the sorted, non-negative ``times``.

    ``rho0`` is flat (length ``A.shape[0]``). Returns an array ``(len(times), n)``.
    ``method``: ``"auto"``, ``"expm"``, ``"chebyshev"``, ``"cram"`` or ``"contour"``
    (module docstring);
    ``n_points``: contour nodes (32 gives about 1e-13; ignored by the other methods);
    ``callback(i, t)`` is called
    after each snapshot (progress bars).
    """
    times = np.asarray(times, dtype=np.float64).ravel()
    if times.size == 0:
        raise ValueError("times must contain at least one time")
    if not np.all(np.isfinite(times)) or np.any(times < 0):
        raise ValueError(f"times must be finite and >= 0, got {times}")
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be sorted in increasing order")
    if method not in ("auto", "expm", "chebyshev", "cram", "contour"):
        raise ValueError(f"method must be 'auto', 'expm', 'chebyshev', 'cram' or 'contour', got {method!r}")
    n_points = check_int("n_points", n_points, minimum=2)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function callback(i, t) or None, got {callback!r}")
    A = sp.csr_matrix(A)
    out = np.empty((times.size, A.shape[0]), dtype=np.float64)
    v = np.asarray(rho0, dtype=np.float64).ravel().copy()
    norm1 = float(abs(A).sum(axis=0).max())
    conservative = float(np.abs(np.asarray(A.sum(axis=0))).max()) <= 1e-12 * max(norm1, 1e-300)
    t_prev = 0.0
    props: dict[tuple, RationalPropagator] = {}
    for n, t in enumerate(times):
        dt = t - t_prev
        if dt > 0:
            m = method
            if m == "auto":
                if norm1 * dt < 200.0:
                    m = "expm"
                elif _chebyshev_is_cheaper(norm1, dt, A.shape[0]):
                    m = "chebyshev"
                else:
                    m = "cram"
            tried = []
            while True:
                if m == "expm":
                    if norm1 * dt > _EXPM_LIMIT:
                        raise ValueError(f"method='expm' at t - t_prev = {dt:g} (t ||A|| = {norm1 * dt:.3g} > "
                                         f"{_EXPM_LIMIT:g}) needs about that many matrix-vector products; use "
                                         "method='auto' or 'cram'" if not tried else _refused(tried, t))
                    v_new = spla.expm_multiply(A * dt, v)
                elif m == "chebyshev":
                    v_new = chebyshev_expmv(A, v, dt, norm1=norm1, conserve_mass=conservative)
                else:
                    v_new = _rational_step(A, v, dt, m, n_points, norm1, conservative, props)
                problem = _step_problem(v, v_new, conservative)
                if problem is None:
                    break
                tried.append((m, problem))
                if method != "auto" or m == "expm":
                    raise ValueError(_refused(tried, t, explicit=method != "auto"))
                m = _FALLBACK[m]  # a non-normal generator amplified this method's error: the next one
            v = v_new
        out[n] = v
        t_prev = t
        if callback is not None:
            callback(n, float(t))
    return out
