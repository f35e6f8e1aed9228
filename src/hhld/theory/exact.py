"""Exact results for overdamped Langevin dynamics ``dθ = −μ∇L dt + √(2D) dW``.

Every function here is an **exact result** (a theorem about the dynamics, not a
statement of the documents). Mobility convention: μ = 1 is the reference code's drift,
μ = 1/η the documents' master equation; the stationary density is Gibbs
``ρ* ∝ exp(−μL/D)``, temperature ``T = D/μ``. Kramers' rate and the saddle search are in
:mod:`hhld.theory.paths`.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._backend import to_numpy
from ..landscapes import Landscape
from . import _checks as C

__all__ = [
    "gibbs_temperature",
    "stein_covariance",
    "stein_uncertainty_lower_bound",
    "free_energy_identity",
    "bakry_emery_rate",
    "expected_consolidation_stationary",
    "expected_grad_norm_sq_stationary",
    "ou_mean",
    "ou_variance",
    "gibbs_log_partition",
]


def gibbs_temperature(D, mu=1.0):
    """``T = D/μ``: the temperature of the stationary density ``exp(−μL/D)`` —
    **exact result**."""
    D = C.real("D", D, nonnegative=True)
    mu = C.real("mu", mu, positive=True)
    return C.out(np.divide(D, mu))


def stein_covariance(D, mu=1.0):
    """``Cov(θ_i, ∂_iL) = D/μ`` under the stationary Gibbs density — **exact result**
    (Stein's identity / integration by parts: ``E[θ_i ∂_iL] = (D/μ)·E[∂θ_i/∂θ_i]``, and
    ``E[∂_iL] = 0``), for any L with ``exp(−μL/D)`` normalisable. Off-diagonal:
    ``Cov(θ_i, ∂_jL) = 0`` for i ≠ j."""
    return gibbs_temperature(D, mu)


def stein_uncertainty_lower_bound(D, mu=1.0):
    """``Δθ_i·Δ(∂_iL) ≥ |Cov(θ_i, ∂_iL)| = D/μ`` at stationarity — **exact result**
    (Cauchy-Schwarz on Stein's identity); equality iff ∂_iL is affine in θ_i on the
    support, e.g. decoupled quadratics ``L = ½Σλ_iθ_i²`` (there Var θ_i = D/(μλ_i),
    Var ∂_iL = λ_i·D/μ). Returns ``D/μ``."""
    return gibbs_temperature(D, mu)


def free_energy_identity(D, kl, mu=1.0):
    """``F[ρ] − F[ρ*] = (D/μ)·KL(ρ‖ρ*)`` with ``F[ρ] = E_ρ[L] − (D/μ)·S[ρ]`` (S the
    Shannon differential entropy) — **exact result** for any density ρ, ρ* the Gibbs
    density. Returns ``(D/μ)·KL``. The documents' Theorem 2 states a bound on the energy
    part only."""
    kl = C.real("kl", kl, nonnegative=True)
    return C.out(np.asarray(gibbs_temperature(D, mu)) * np.asarray(kl))


def bakry_emery_rate(kappa, mu=1.0):
    """KL decay rate ``2μκ`` for κ-convex L (∇²L ⪰ κI, κ > 0) — **exact result**
    (Bakry-Émery: ρ* satisfies a log-Sobolev inequality with constant μκ/D, so
    ``KL(ρ_t‖ρ*) ≤ KL(ρ_0‖ρ*)·exp(−2μκ t)``); independent of D."""
    kappa = C.real("kappa", kappa, positive=True)
    mu = C.real("mu", mu, positive=True)
    return C.out(2.0 * np.asarray(mu) * np.asarray(kappa))


def expected_grad_norm_sq_stationary(mean_laplacian, D, mu=1.0):
    """``E|∇L|² = (D/μ)·E[ΔL]`` under ρ* — **exact result** (integration by parts:
    ``∇ρ* = −(μ/D)ρ*∇L``)."""
    lap = C.real("mean_laplacian", mean_laplacian)
    return C.out(np.asarray(gibbs_temperature(D, mu)) * np.asarray(lap))


def expected_consolidation_stationary(mean_laplacian, dim, mu=1.0):
    """``E[C] = E[ΔL]/(μ·d)`` at stationarity for the consolidation ratio
    ``C = |∇L|²/(D·d)`` — **exact result** (from ``E|∇L|² = (D/μ)E[ΔL]``); for μ = 1,
    ``E[C] = E[ΔL]/d``, independent of D for quadratics."""
    lap = C.real("mean_laplacian", mean_laplacian)
    dim = C.real("dim", dim, positive=True)
    mu = C.real("mu", mu, positive=True)
    return C.out(np.asarray(lap) / (np.asarray(mu) * np.asarray(dim)))


def ou_mean(theta0, t, kappa, mu=1.0):
    """``E[θ_t] = θ_0·exp(−μκt)`` for ``L = κθ²/2`` (Ornstein-Uhlenbeck) — **exact result**.
    ``kappa >= 0`` (κ = 0: free diffusion)."""
    th = C.real("theta0", theta0)
    t = C.real("t", t, nonnegative=True)
    kappa = C.real("kappa", kappa, nonnegative=True)
    mu = C.real("mu", mu, positive=True)
    return C.out(np.asarray(th) * np.exp(-np.asarray(mu) * np.asarray(kappa) * np.asarray(t)))


def ou_variance(t, kappa, D, mu=1.0, var0=0.0):
    """``Var[θ_t] = var0·e^{−2μκt} + (D/(μκ))·(1 − e^{−2μκt})`` for ``L = κθ²/2`` —
    **exact result** (per coordinate; κ = 0 gives ``var0 + 2Dt``). Stationary value
    ``D/(μκ)``."""
    t = C.real("t", t, nonnegative=True)
    kappa = C.real("kappa", kappa, nonnegative=True)
    D = C.real("D", D, nonnegative=True)
    mu = C.real("mu", mu, positive=True)
    var0 = C.real("var0", var0, nonnegative=True)
    t, kappa, D, mu, var0 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, kappa, D, mu, var0)))
    r = 2.0 * mu * kappa
    # (1 − e^{−rt})/r · 2D/... written with expm1 so that κ → 0 is exact
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(r > 0, -np.expm1(-r * t) / np.where(r > 0, r, 1.0), t)
    return C.out(var0 * np.exp(-r * t) + 2.0 * D * frac)


#: the absolute error in ``log Z`` that :func:`gibbs_log_partition` accepts between ``n`` and ``n/2`` panels
LOG_Z_TOL = 1e-8
#: the most quadrature points :func:`gibbs_log_partition` refines to (about 100 MB of float64 work arrays)
LOG_Z_MAX_POINTS = 1 << 22


def gibbs_log_partition(landscape: Landscape, D, mu=1.0, *, box=None, n_panels: int | None = None,
                        order: int = 8, chunk: int = 1 << 18) -> float:
    """``log Z = log ∫_box exp(−μL(θ)/D) dθ`` by composite Gauss-Legendre quadrature
    (``n_panels`` panels of ``order`` nodes per axis) on ``box`` (default
    ``landscape.box``) — **exact result** up to quadrature error and the truncation to
    the box; for ``d ≤ 3``. Computed as ``−μL_min/D + log Σ w·exp(−μ(L−L_min)/D)``.

    The quadrature error is checked: the rule on half as many panels must agree within
    :data:`LOG_Z_TOL`; if not (a Gibbs width ``√(D/μL'')`` below the panel width: small ``D``), the
    panels are doubled until it does or the grid would exceed :data:`LOG_Z_MAX_POINTS` points, and
    then :class:`hhld._validation.QuadratureWarning` says by how much the last two disagree (pass a
    box around the minima, or more ``n_panels``). Until 2026-12-02 the panels were fixed: a 2-D
    quadratic at ``D = 1e-6`` gave ``Z`` 52 % off, a 1-D double well at ``D = 1e-8`` 13 units of
    ``log Z``, silently.

    The library's one log-partition function (``hhld.observables.log_partition`` is this
    function). Warns (:class:`hhld._validation.BoxTruncationWarning`) when the box cuts off a
    significant part of ``exp(−μL/D)``: ``log Z`` (and a KL built on it) is then too small,
    e.g. ``Quadratic([1])`` on ``[−3, 3]`` at ``D = 1`` misses 0.27 % of ``Z``."""
    from .._validation import QuadratureWarning, check_box_truncation
    from ..landscapes import get_landscape

    landscape = get_landscape(landscape)
    d = landscape.dim
    if d > 3:
        raise ValueError(f"gibbs_log_partition uses a tensor grid and needs d <= 3, got dim={d}")
    D = C.real("D", D, positive=True)
    mu = C.real("mu", mu, positive=True)
    box = np.asarray(box if box is not None else landscape.box, dtype=np.float64)
    if box.shape != (d, 2) or np.any(box[:, 1] <= box[:, 0]):
        raise ValueError(f"box must be {d} pairs (lo, hi) with lo < hi, got {box.tolist()!r}")
    if n_panels is None:
        n_panels = {1: 400, 2: 120, 3: 24}[d]
    n = C.check_int("n_panels", n_panels, minimum=1)
    order = C.check_int("order", order, minimum=1)
    rule = np.polynomial.legendre.leggauss(order)
    lz, parts = _gauss_log_z(landscape, box, n, rule, mu, D, chunk)
    coarse = _gauss_log_z(landscape, box, n // 2, rule, mu, D, chunk)[0] if n > 1 else lz
    while abs(lz - coarse) > LOG_Z_TOL and (2 * n * order) ** d <= LOG_Z_MAX_POINTS:
        n *= 2
        coarse, (lz, parts) = lz, _gauss_log_z(landscape, box, n, rule, mu, D, chunk)
    if abs(lz - coarse) > LOG_Z_TOL:
        warnings.warn(f"log Z of {landscape.name} at D={D!r} may not be resolved by the quadrature: {n} and "
                      f"{n // 2} panels of {order} nodes per axis give {lz:.10g} and {coarse:.10g} (the Gibbs density "
                      "is about as narrow as a panel; the finer value is returned, its error unknown); pass a box "
                      "around the minima or more n_panels", QuadratureWarning, stacklevel=2)
    axes, e, W = parts
    shape = tuple(a.size for a in axes)
    check_box_truncation(axes, e.reshape(shape), [tuple(b) for b in box], "log Z (and a KL built on it) is too small",
                         weights=W.reshape(shape), stacklevel=3)
    return lz


def _gauss_log_z(landscape, box, n_panels, rule, mu, D, chunk):
    """``(log Z, (axes, exponent, weights))`` by the composite rule ``rule`` (nodes, weights on
    ``[-1, 1]``) on ``n_panels`` panels per axis of ``box``."""
    xg, wg = rule
    axes, weights = [], []
    for lo, hi in box:
        edges = np.linspace(lo, hi, n_panels + 1)
        a, b = edges[:-1, None], edges[1:, None]
        axes.append((0.5 * (b - a) * xg + 0.5 * (b + a)).ravel())
        weights.append((0.5 * (b - a) * wg).ravel())
    grids = np.meshgrid(*axes, indexing="ij")
    W = weights[0]
    for w in weights[1:]:
        W = np.multiply.outer(W, w)
    pts = np.stack([g.ravel() for g in grids], axis=-1)
    W = W.ravel()
    vals = np.empty(pts.shape[0])
    for i in range(0, pts.shape[0], chunk):
        vals[i:i + chunk] = np.asarray(to_numpy(landscape.value(pts[i:i + chunk])), dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        from .._validation import NonFiniteError

        raise NonFiniteError(f"-mu L / D is non-finite on the box {box.tolist()} (D={D!r}, mu={mu!r}); "
                             f"shrink the box or use a larger D", quantity="potential")
    e = -mu * vals / D
    emax = float(np.max(e))
    return float(emax + np.log(np.sum(W * np.exp(e - emax)))), (axes, e, W)
