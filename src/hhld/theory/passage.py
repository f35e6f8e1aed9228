"""Exact mean first-passage times of 1-D overdamped Langevin dynamics — **exact results**.

For ``dθ = −μL'(θ) dt + √(2D) dW`` on the line, the mean first-passage time from ``x0`` to an
absorbing point ``b > x0``, with a reflecting boundary at ``a < x0`` (``a = −∞``: a natural
boundary, the potential confining), is the double integral (Gardiner, *Stochastic Methods*,
§5.2.7; Risken §8.1)::

    τ(x0 → b) = (1/D) ∫_{x0}^{b} dy e^{U(y)} ∫_{a}^{y} dz e^{−U(z)},      U = μL/D,

and its mirror image for ``b < x0``. It is the exact counterpart of the Eyring-Kramers rate
(:func:`hhld.theory.paths.kramers_rate`), which is its leading order as ``D/μ → 0``:
``τ(minimum → beyond the saddle) ≈ 1/k_Kramers``. In any dimension (d ≤ 3) the same quantity
comes from the Fokker-Planck generator on a grid: :func:`hhld.fokker_planck.mfpt.mean_first_passage_time`.

Numerics: the inner integral is ``∫_a^{x0}`` by adaptive quadrature plus a cumulative Simpson
integral on a uniform grid of ``points`` nodes over ``[x0, b]``, the outer integral by Simpson
on the same grid, with ``U`` shifted by its minimum so that nothing overflows short of a
passage time beyond ``e^700``. Relative accuracy ~1e-9 for smooth potentials (tested against
independent quadrature).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import integrate

from .._backend import to_numpy
from ..landscapes import Landscape
from . import _checks as C

__all__ = ["mean_first_passage_time_1d", "escape_time_exact_1d"]


def _potential(landscape) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(landscape, Landscape):
        if landscape.dim != 1:
            raise ValueError(f"the 1-D passage-time formula needs a 1-D landscape, got dim={landscape.dim}; "
                             "use hhld.fokker_planck.mfpt.mean_first_passage_time on a grid (d <= 3)")
        return lambda x: np.asarray(to_numpy(landscape.value(np.asarray(x, dtype=np.float64)[:, None])),
                                    dtype=np.float64)
    if callable(landscape):
        def f(x):
            x = np.asarray(x, dtype=np.float64)
            v = np.asarray(landscape(x), dtype=np.float64)
            if v.shape != x.shape:
                raise ValueError(f"the loss function must map an array of points (n,) to values (n,), got shape "
                                 f"{v.shape} for input {x.shape}")
            return v
        return f
    raise TypeError(f"landscape must be a 1-D hhld Landscape or a vectorised function L(x), got {landscape!r}")


def _far_boundary(U: Callable, start: float, direction: float, margin: float = 50.0) -> float:
    """A point beyond ``start`` (in ``direction``) where ``U`` has risen ``margin`` above its
    minimum between the two: ``e^{-U}`` is negligible past it."""
    width = 1.0
    for _ in range(60):
        xs = start + direction * np.linspace(0.0, width, 401)
        u = U(xs)
        if not np.all(np.isfinite(u)):
            u = u[: np.argmax(~np.isfinite(u))]
            if u.size < 2:
                break
            xs = xs[: u.size]
            if u[-1] - u.min() > margin:
                return float(xs[-1])
            break
        if u[-1] - u.min() > margin and u[-1] >= u[-2]:
            return float(xs[-1])
        width *= 2.0
    raise ValueError("the potential does not confine on the open side (mu L/D does not rise by 50 within "
                     f"2^60 of x={start}); give a reflecting boundary reflect=")


def mean_first_passage_time_1d(landscape, x0, b, D, mu: float = 1.0, *, reflect: float | None = None,
                               points: int = 20001) -> float:
    """``τ(x0 → b)``, the exact mean first-passage time of ``dθ = −μL'dt + √(2D)dW`` from ``x0`` to
    ``b`` — **exact result** (see the module docstring).

    ``landscape``: a 1-D :class:`~hhld.landscapes.Landscape` or a vectorised ``L(x)``.
    ``reflect``: a reflecting boundary on the side away from ``b`` (default: none, the potential
    must confine there). ``points``: grid nodes over ``[x0, b]`` (odd; more for steep potentials).
    """
    U0 = _potential(landscape)
    x0 = C.real("x0", x0)
    b = C.real("b", b)
    D = C.real("D", D, positive=True)
    mu = C.real("mu", mu, positive=True)
    points = C.check_int("points", points, minimum=5)
    points += 1 - points % 2
    if x0 == b:
        return 0.0
    s = 1.0 if b > x0 else -1.0  # mirror so that the target lies to the right

    def U(x):
        return mu * U0(s * np.asarray(x, dtype=np.float64)) / D

    x0m, bm = s * x0, s * b
    if reflect is not None:
        a = s * C.real("reflect", reflect)
        if not a < x0m:
            raise ValueError(f"reflect={reflect} must lie on the other side of x0={x0} from b={b}")
    else:
        a = _far_boundary(U, x0m, -1.0)
    ys = np.linspace(x0m, bm, points)
    uy = U(ys)
    ua = U(np.linspace(a, x0m, 2001))
    if not (np.all(np.isfinite(uy)) and np.all(np.isfinite(ua))):
        raise ValueError("the loss is not finite between the boundary and the target")
    shift = float(min(uy.min(), ua.min()))
    head, _ = integrate.quad(lambda z: math.exp(-(float(U(np.array([z]))[0]) - shift)), a, x0m,
                             limit=400, epsabs=0.0, epsrel=1e-12)
    inner = head + integrate.cumulative_simpson(np.exp(-(uy - shift)), x=ys, initial=0.0)
    top = float(uy.max() - shift)
    if top > 700.0:
        raise OverflowError(f"the passage time exceeds e^700 (mu ΔL/D = {top:.4g} between x0 and b): "
                            "use the Arrhenius exponent hhld.theory.arrhenius_exponent instead")
    outer = integrate.simpson(np.exp(uy - shift) * inner, x=ys)
    return float(outer / D)


def escape_time_exact_1d(landscape, minimum, target, D, mu: float = 1.0, *, points: int = 20001) -> float:
    """The exact mean time to go from ``minimum`` to ``target`` (e.g. the minimum of the
    neighbouring basin) — **exact result**, the counterpart of ``1/k_Kramers``
    (:attr:`hhld.theory.paths.KramersResult.mean_escape_time_leading_order`), which it approaches
    as ``D/μ → 0``. For the 1-D double well ``(θ²−1)²`` at ``D = 1``: 3.5… against 1/k = 3.02."""
    return mean_first_passage_time_1d(landscape, C.point("minimum", minimum, 1)[0],
                                      C.point("target", target, 1)[0], D, mu, points=points)
