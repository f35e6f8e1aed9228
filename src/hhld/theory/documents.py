"""The HHLD documents' formulas, exactly as the documents state them.

Every function here is **the documents' form**: it computes what the documents
write, not what is true. The exact counterparts live in :mod:`hhld.theory.exact`
(stationary / Gibbs identities) and :mod:`hhld.theory.paths` (minima, saddles,
minimum-energy paths, Kramers). ``docs/theory.md`` puts each pair side by side.

Conventions. The documents use two drifts: the reference code's ``dθ = -∇L dt + √(2D) dW``
(mobility μ = 1) and the master equation's ``∂ρ/∂t = (1/η)∇·(∇L ρ) + D∇²ρ`` (μ = 1/η).
The documents' formulas below are written in their own symbols (η, D, learning rate);
they take no ``mu`` because the documents give them none.

All scalar functions broadcast over numpy arrays (e.g. a sweep over D) and return a
Python float for scalar input.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..landscapes import Landscape
from . import _checks as C

__all__ = [
    "hbar",
    "effective_temperature",
    "eta_opt",
    "barrier_action_straight",
    "barrier_action_path",
    "wkb_tunneling_probability",
    "uncertainty_bound_principle",
    "uncertainty_bound_theorem1",
    "uncertainty_bound_takeaway",
    "uncertainty_bound_hbar",
    "uncertainty_bound_total",
    "theorem2_bound",
    "theorem3_rate",
    "theorem4_criterion",
    "theorem4_margin",
    "takeaway5_criterion",
    "takeaway5_margin",
    "tunneling_rate_dimension",
]


# --------------------------------------------------------------------- ħ, T, η
def hbar(eta, D):
    """Effective Planck constant ``ħ = √(η·D)`` — **the documents' form**
    ("Tunneling" section; ``self.hbar = np.sqrt(eta * D)`` in the reference code).

    ``eta > 0`` is the documents' "learning inertia" (their η = 1/learning_rate),
    ``D >= 0`` the diffusion coefficient. No exact counterpart: Langevin dynamics has
    no Planck constant; the temperature of the stationary Gibbs density is
    ``T = D/μ`` (see :func:`hhld.theory.exact.gibbs_temperature`).
    """
    eta = C.real("eta", eta, positive=True)
    D = C.real("D", D, nonnegative=True)
    return C.out(np.sqrt(np.multiply(eta, D)))


def effective_temperature(D, eta):
    """``T_eff = D/η`` — **the documents' form** (Takeaway 14).

    Exact counterpart: the Gibbs density ``exp(-μL/D)`` has temperature ``T = D/μ``;
    with the master equation's mobility μ = 1/η that is ``T = η·D`` (not ``D/η``), with
    the reference code's μ = 1 it is ``T = D``.
    """
    D = C.real("D", D, nonnegative=True)
    eta = C.real("eta", eta, positive=True)
    return C.out(np.divide(D, eta))


def eta_opt(D, hessian_trace, n):
    """``η_opt = √(D·Tr(∇²L)/N)`` — **the documents' form** (Takeaway 9).

    ``hessian_trace`` is ``Tr ∇²L`` (must be >= 0), ``n`` the documents' ``N``
    (number of parameters / samples; > 0). The documents derive no exact counterpart;
    ``hhld validate`` measures it.
    """
    D = C.real("D", D, nonnegative=True)
    tr = C.real("hessian_trace", hessian_trace, nonnegative=True)
    n = C.real("n", n, positive=True)
    return C.out(np.sqrt(np.multiply(D, tr) / n))


# ------------------------------------------------------------------ tunneling
def _loss_at(landscape, theta: np.ndarray) -> float:
    if isinstance(landscape, Landscape):
        v = landscape.value(theta)
    elif callable(landscape):
        v = landscape(theta)
    else:
        raise TypeError(f"landscape must be a hhld Landscape or a callable loss_fn, got {landscape!r}")
    v = float(np.asarray(C.to_numpy(v)).reshape(()))
    if not np.isfinite(v):
        raise ValueError(f"loss is not finite at theta={theta!r}: L={v!r}")
    return v


def barrier_action_straight(landscape: Landscape | Callable, theta_from, theta_to, eta):
    """Straight-line barrier action ``S = √(2η·ΔL)·|θ_to − θ_from|``,
    ``ΔL = max(L(θ_to) − L(θ_from), 0)`` — **the documents' form** (the reference code's
    ``tunneling_probability``).

    Note that ΔL is the difference of the *endpoint* losses, not a barrier height: between
    two equal minima (Example 4) ``ΔL = 0`` and so ``S = 0`` and ``P = 1`` at every D.
    ``landscape`` is a :class:`~hhld.landscapes.Landscape` or a plain ``loss_fn(theta)``.
    """
    eta = C.real("eta", eta, positive=True)
    dim = landscape.dim if isinstance(landscape, Landscape) else None
    a = C.point("theta_from", theta_from, dim)
    b = C.point("theta_to", theta_to, dim if dim is not None else a.shape[0])
    dl = max(_loss_at(landscape, b) - _loss_at(landscape, a), 0.0)
    return float(np.sqrt(2.0 * eta * dl) * np.linalg.norm(b - a))


def barrier_action_path(landscape: Landscape, theta_from, theta_to, eta, n_images: int = 41,
                        *, relax_endpoints: bool = False, path: np.ndarray | None = None,
                        points_per_segment: int = 32):
    """Integral barrier action along the minimum-energy path —
    **the documents' form** ``S_barrier = ∫√(2η·ΔL) dθ`` ("Tunneling" section), read as
    ``S = ∫_path √(2η·max(L(θ(s)) − L(θ_from), 0)) ds`` with ``s`` the arc length of the
    minimum-energy path from ``θ_from`` to ``θ_to`` (found by
    :func:`hhld.theory.paths.minimum_energy_path`, ``n_images`` images; pass ``path`` to
    use your own ``(n, d)`` polyline instead).

    The integral is computed on a cubic-spline interpolation of the path in arc length
    with ``points_per_segment`` Gauss-Legendre nodes per segment. This is the WKB
    (Agmon) action of a particle of mass η; the exact escape rate of the Langevin
    dynamics is Kramers' (:func:`hhld.theory.paths.kramers_rate`), whose exponent is
    ``μΔL/D`` with ΔL the barrier height, not an action.
    """
    from .paths import minimum_energy_path, _spline_path

    eta = C.real("eta", eta, positive=True)
    if not isinstance(landscape, Landscape):
        raise TypeError(f"landscape must be a hhld Landscape, got {landscape!r}")
    a = C.point("theta_from", theta_from, landscape.dim)
    b = C.point("theta_to", theta_to, landscape.dim)
    if path is None:
        path = minimum_energy_path(landscape, a, b, n_images, relax_endpoints=relax_endpoints)
    else:
        path = np.asarray(path, dtype=np.float64)
        if path.ndim != 2 or path.shape[1] != landscape.dim or path.shape[0] < 2:
            raise ValueError(f"path must have shape (n >= 2, {landscape.dim}), got {path.shape}")
    L0 = _loss_at(landscape, path[0])
    spline, knots = _spline_path(path)
    xg, wg = np.polynomial.legendre.leggauss(int(points_per_segment))
    lo, hi = knots[:-1, None], knots[1:, None]
    s = (0.5 * (hi - lo) * xg[None, :] + 0.5 * (hi + lo)).ravel()
    w = (0.5 * (hi - lo) * wg[None, :]).ravel()
    pts = spline(s)
    speed = np.linalg.norm(spline(s, 1), axis=-1)
    dl = np.maximum(np.asarray(C.to_numpy(landscape.value(pts)), dtype=np.float64) - L0, 0.0)
    return float(np.sum(w * speed * np.sqrt(2.0 * eta * dl)))


def wkb_tunneling_probability(action, hbar):
    """``P_tunnel = exp(−S_barrier/ħ)`` — **the documents' form** ("Tunneling" section,
    Takeaways 3 and 15). ``action >= 0``; ``hbar >= 0`` (``ħ = 0`` gives the limit:
    0 for ``S > 0``, 1 for ``S = 0``)."""
    S = C.real("action", action, nonnegative=True)
    h = C.real("hbar", hbar, nonnegative=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        expo = np.where(np.asarray(S) == 0, 0.0, np.divide(S, h))
    return C.out(np.exp(-expo))


# ---------------------------------------------------------------- uncertainty
def uncertainty_bound_principle(eta, lr):
    """``Δθ·Δ∇L ≥ √(η·learning_rate)/2`` — **the documents' form** (section
    "Uncertainty Principle"); returns the right-hand side. With the documents' own
    ``η = 1/learning_rate`` this is always 1/2.

    Exact counterpart: at stationarity ``Δθ_i·Δ∂_iL ≥ D/μ``
    (:func:`hhld.theory.exact.stein_uncertainty_lower_bound`)."""
    eta = C.real("eta", eta, positive=True)
    lr = C.real("lr", lr, positive=True)
    return C.out(np.sqrt(np.multiply(eta, lr)) / 2.0)


def uncertainty_bound_theorem1(eta, lr):
    """Theorem 1: ``√Var[θ]·√Var[∇L] ≥ η·learning_rate/4`` — **the documents' form**;
    returns the right-hand side (a bound on the product of standard deviations, i.e.
    the same left-hand side as the "Uncertainty Principle" section but a different
    right-hand side). With ``η = 1/learning_rate`` it is always 1/4."""
    eta = C.real("eta", eta, positive=True)
    lr = C.real("lr", lr, positive=True)
    return C.out(np.multiply(eta, lr) / 4.0)


def uncertainty_bound_takeaway(eta):
    """``Δθ·Δ∇L ≥ η/2`` — **the documents' form** (the identity table and Takeaways 2
    and 15); returns the right-hand side."""
    eta = C.real("eta", eta, positive=True)
    return C.out(np.asarray(eta) / 2.0)


def uncertainty_bound_hbar(hbar):
    """``Δθ·Δ∇L ≥ ħ/2`` — **the documents' form** used by Example 3 and Takeaways 6
    and 11 (per dimension); returns the right-hand side."""
    h = C.real("hbar", hbar, nonnegative=True)
    return C.out(np.asarray(h) / 2.0)


def uncertainty_bound_total(hbar, d):
    """"Total uncertainty ∝ √d" — **the documents' form** (Takeaway 11), taken as
    ``(ħ/2)·√d``. (Summing the per-dimension bound ħ/2 over d coordinates gives
    ``d·ħ/2``, not ``√d·ħ/2``; the exact stationary counterpart is ``d·D/μ`` for
    ``Σ_i Δθ_i·Δ∂_iL``.)"""
    h = C.real("hbar", hbar, nonnegative=True)
    d = C.real("d", d, positive=True)
    return C.out(np.multiply(h, np.sqrt(d)) / 2.0)


# ------------------------------------------------------------------- theorems
def theorem2_bound(D, eta, kl):
    """Theorem 2 (energy-entropy bound): ``E[ρ] − E[ρ*] ≥ (D/2η)·KL(ρ‖ρ*)`` —
    **the documents' form**; returns the right-hand side ``(D/2η)·KL``.

    Exact counterpart: ``F[ρ] − F[ρ*] = (D/μ)·KL`` with ``F = E[L] − (D/μ)·S``
    (:func:`hhld.theory.exact.free_energy_identity`); the energy difference alone can be
    negative (a state narrower than ρ* at the minimum), so the stated bound fails in
    general."""
    D = C.real("D", D, nonnegative=True)
    eta = C.real("eta", eta, positive=True)
    kl = C.real("kl", kl, nonnegative=True)
    return C.out(np.multiply(D, kl) / (2.0 * np.asarray(eta)))


def theorem3_rate(D, eta, lam):
    """Theorem 3: ``KL(ρ(t)‖ρ*) ≤ KL(ρ₀‖ρ*)·exp(−σt)`` with ``σ = 2D/(η + D/λ)`` —
    **the documents' form**; returns σ. ``lam >= 0`` is the entropy coupling
    (``lam = 0`` gives the limit σ = 0).

    Exact counterpart: for κ-convex L the Bakry-Émery rate is ``2μκ``
    (:func:`hhld.theory.exact.bakry_emery_rate`), which depends on the curvature and
    not on D or λ."""
    D = C.real("D", D, nonnegative=True)
    eta = C.real("eta", eta, positive=True)
    lam = C.real("lam", lam, nonnegative=True)
    D_, eta_, lam_ = np.broadcast_arrays(np.asarray(D, float), np.asarray(eta, float), np.asarray(lam, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(lam_ > 0, 2.0 * D_ / (eta_ + D_ / np.where(lam_ > 0, lam_, 1.0)), 0.0)
    return C.out(sigma)


def theorem4_margin(D, eta, delta_loss, delta_theta):
    """``D − η·ΔL·Δθ²``: positive when Theorem 4's criterion holds — **the documents' form**."""
    D = C.real("D", D, nonnegative=True)
    eta = C.real("eta", eta, positive=True)
    dl = C.real("delta_loss", delta_loss, nonnegative=True)
    dt = C.real("delta_theta", delta_theta)
    return C.out(np.asarray(D) - np.asarray(eta) * np.asarray(dl) * np.square(dt))


def theorem4_criterion(D, eta, delta_loss, delta_theta):
    """Theorem 4 (phase-transition criterion): a transition occurs when
    ``D > η·ΔL·Δθ²`` — **the documents' form**; returns the boolean.

    Exact counterpart: an overdamped Langevin particle crosses any finite barrier at
    every ``D > 0``, at the Kramers rate ``∝ exp(−μΔL/D)``
    (:func:`hhld.theory.paths.kramers_rate`); there is no threshold in D."""
    return C.outbool(np.asarray(theorem4_margin(D, eta, delta_loss, delta_theta)) > 0)


def takeaway5_margin(D, delta_loss, delta_theta):
    """``D − ΔL·Δθ²`` (Takeaway 5's criterion, without the η of Theorem 4) —
    **the documents' form**."""
    D = C.real("D", D, nonnegative=True)
    dl = C.real("delta_loss", delta_loss, nonnegative=True)
    dt = C.real("delta_theta", delta_theta)
    return C.out(np.asarray(D) - np.asarray(dl) * np.square(dt))


def takeaway5_criterion(D, delta_loss, delta_theta):
    """Takeaway 5: escaping a local minimum requires ``D > ΔL·Δθ²`` —
    **the documents' form** (Theorem 4 without the factor η); returns the boolean."""
    return C.outbool(np.asarray(takeaway5_margin(D, delta_loss, delta_theta)) > 0)


def tunneling_rate_dimension(d, action_per_sqrt_dim, hbar, omega: Any = 1.0):
    """``Γ = ω·exp(−S/ħ)`` with ``S = S₀·√d`` — **the documents' form** (Takeaway 11,
    "Γ ∝ ω·exp(−S/ħ), S ∝ √d"); ``action_per_sqrt_dim`` is ``S₀``.

    Taken literally this *decreases* with d, while the takeaway's heading says the rate
    increases with dimension. Exact counterpart: the Kramers rate
    (:func:`hhld.theory.paths.kramers_rate`), in which added stable directions change
    only the prefactor ``√(det H_min/|det H_saddle|)``."""
    d = C.real("d", d, positive=True)
    S0 = C.real("action_per_sqrt_dim", action_per_sqrt_dim, nonnegative=True)
    h = C.real("hbar", hbar, positive=True)
    omega = C.real("omega", omega, nonnegative=True)
    return C.out(np.asarray(omega) * np.exp(-np.asarray(S0) * np.sqrt(d) / np.asarray(h)))
