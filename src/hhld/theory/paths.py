"""Minima, index-1 saddles, minimum-energy paths and the Eyring-Kramers rate — **exact results**
(numerical, for any :class:`~hhld.landscapes.Landscape`).

* :func:`find_minimum` — quasi-Newton descent, then Newton polishing on the gradient.
* :func:`minimum_energy_path` — the simplified string method (E, Ren & Vanden-Eijnden,
  J. Chem. Phys. 126, 164103 (2007)): images descend the gradient, then are redistributed
  at equal arc length on a cubic spline.
* :func:`find_saddle` — the highest point of the converged string (maximised on its
  spline), refined by eigenvector-following Newton steps (ascent along the lowest Hessian
  mode, descent along the others, i.e. plain Newton near an index-1 saddle) until
  ``|∇L|`` is at rounding level; the result is verified to have exactly one negative
  Hessian eigenvalue.
* :func:`kramers_rate` — the overdamped Eyring-Kramers formula for
  ``dθ = −μ∇L dt + √(2D) dW``::

      k = (μ|λ⁻|/2π) · √(det H_min / |det H_saddle|) · exp(−μΔL/D)

  with λ⁻ the negative Hessian eigenvalue of L at the saddle and ΔL = L(saddle) − L(min).
  It is the leading term as ``D/μ → 0`` (relative corrections O(D/(μΔL))).

Landscape Hessians come from ``landscape.hessian`` (closed form where the landscape has
one, else central differences of the gradient).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.interpolate import CubicSpline

from .._backend import to_numpy
from ..landscapes import Landscape
from . import _checks as C

__all__ = [
    "StationaryPoint",
    "KramersResult",
    "stationary_point",
    "find_minimum",
    "find_minima",
    "minimum_energy_path",
    "find_saddle",
    "kramers_rate",
    "arrhenius_exponent",
]


# --------------------------------------------------------------- primitives
def _check_landscape(landscape) -> Landscape:
    if not isinstance(landscape, Landscape):
        raise TypeError(f"landscape must be a hhld.landscapes.Landscape, got {landscape!r}")
    return landscape


def _val(ls: Landscape, x: np.ndarray) -> float:
    return float(np.asarray(to_numpy(ls.value(x)), dtype=np.float64).reshape(()))


def _vals(ls: Landscape, X: np.ndarray) -> np.ndarray:
    return np.asarray(to_numpy(ls.value(X)), dtype=np.float64).reshape(X.shape[0])


def _grad(ls: Landscape, x: np.ndarray) -> np.ndarray:
    return np.asarray(to_numpy(ls.grad(x)), dtype=np.float64).reshape(x.shape)


def _hess(ls: Landscape, x: np.ndarray) -> np.ndarray:
    H = np.asarray(to_numpy(ls.hessian(x)), dtype=np.float64).reshape(x.shape[0], x.shape[0])
    return 0.5 * (H + H.T)


def _gscale(ls: Landscape, *pts) -> float:
    """A gradient scale for tolerances (typical |∇L| on the segment between points)."""
    P = np.asarray(pts, dtype=np.float64)
    s = np.linspace(0.0, 1.0, 9)[:, None]
    X = np.concatenate([P[i] + s * (P[i + 1] - P[i]) for i in range(len(P) - 1)]) if len(P) > 1 else P
    g = np.asarray(to_numpy(ls.grad(X)), dtype=np.float64)
    return max(1.0, float(np.max(np.linalg.norm(g, axis=-1))))


@dataclass(frozen=True)
class StationaryPoint:
    """A point with its loss, gradient norm, Hessian eigenvalues (ascending) and
    Morse index (number of negative eigenvalues)."""

    point: np.ndarray
    value: float
    grad_norm: float
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray = field(repr=False)
    index: int


def stationary_point(landscape: Landscape, x, *, rtol_eig: float = 1e-8) -> StationaryPoint:
    """Characterise ``x``: loss, ``|∇L|``, Hessian spectrum and Morse index (an eigenvalue
    counts as negative below ``−rtol_eig·max|λ|``)."""
    ls = _check_landscape(landscape)
    x = C.point("x", x, ls.dim)
    lam, vec = np.linalg.eigh(_hess(ls, x))
    tol = rtol_eig * max(1e-300, float(np.max(np.abs(lam))))
    return StationaryPoint(point=x, value=_val(ls, x), grad_norm=float(np.linalg.norm(_grad(ls, x))),
                           eigenvalues=lam, eigenvectors=vec, index=int(np.sum(lam < -tol)))


def _newton_polish(ls: Landscape, x: np.ndarray, *, n_negative: int, gtol: float,
                   max_iter: int = 100, radius: float | None = None) -> np.ndarray:
    """Eigenvector-following Newton: in the Hessian eigenbasis, ascend along the
    ``n_negative`` lowest modes and descend along the others (step ``−g_k/|λ_k|`` with the
    sign flipped on the ascent modes); near a stationary point of that index this is
    exactly Newton's method. Steps are capped at ``radius``."""
    x = x.copy()
    if radius is None:
        radius = 0.1 * max(1.0, float(np.linalg.norm(x)))
    g = _grad(ls, x)
    gn = float(np.linalg.norm(g))
    for _ in range(max_iter):
        if gn <= gtol:
            break
        lam, vec = np.linalg.eigh(_hess(ls, x))
        gk = vec.T @ g
        floor = 1e-12 * max(1e-300, float(np.max(np.abs(lam))))
        denom = np.maximum(np.abs(lam), floor)
        sign = np.ones_like(lam)
        sign[:n_negative] = -1.0
        step = -(vec @ (sign * gk / denom))
        sn = float(np.linalg.norm(step))
        if sn > radius:
            step *= radius / sn
        x_new = x + step
        g_new = _grad(ls, x_new)
        gn_new = float(np.linalg.norm(g_new))
        if not np.all(np.isfinite(g_new)):
            radius *= 0.25
            continue
        if gn_new > 2.0 * gn and sn <= radius:  # overshoot: shrink the trust radius
            radius = 0.5 * min(radius, sn)
        x, g, gn = x_new, g_new, gn_new
        if sn < 1e-15 * (1.0 + float(np.linalg.norm(x))):
            break
    return x


# ------------------------------------------------------------------- minima
def find_minimum(landscape: Landscape, x0, *, gtol: float = 1e-10, maxiter: int = 10000) -> np.ndarray:
    """A local minimum of L reached from ``x0`` — **exact result** (numerical).

    BFGS descent, then Newton polishing until ``|∇L| ≤ gtol·scale`` (scale: typical
    gradient size near ``x0``). If ``x0`` sits on a stationary point that is not a
    minimum (e.g. exactly on a saddle), the search leaves it along a negative Hessian
    mode. Returns the point, shape ``(d,)``; :func:`stationary_point` gives its Hessian.
    """
    ls = _check_landscape(landscape)
    x = x_start = C.point("x0", x0, ls.dim)
    C.real("gtol", gtol, positive=True)
    scale = _gscale(ls, x)
    tol = gtol * scale
    for _attempt in range(4):
        res = optimize.minimize(lambda z: _val(ls, z), x, jac=lambda z: _grad(ls, z), method="BFGS",
                                options={"gtol": tol, "maxiter": maxiter})
        x = np.asarray(res.x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"find_minimum diverged from x0={x0!r} (landscape unbounded below?)")
        sp = stationary_point(ls, x)
        if sp.index == 0:
            if sp.grad_norm > tol and np.all(sp.eigenvalues > 0):
                x = _newton_polish(ls, x, n_negative=0, gtol=tol)
            g = float(np.linalg.norm(_grad(ls, x)))
            width = float(np.max(np.diff(np.asarray(ls.box, dtype=np.float64), axis=1)))
            far = float(np.linalg.norm(x - x_start)) > 1e6 * max(1.0, width, float(np.linalg.norm(x_start)))
            if far or not g <= max(1e3 * tol, 1e-6 * _gscale(ls, x)):
                raise RuntimeError(f"find_minimum did not converge from x0={x0!r}: it stopped at {x!r} where "
                                   f"|grad L| = {g:.3g} (landscape unbounded below, or a minimum beyond reach?)")
            return x
        # on a saddle / maximum: step off along the lowest mode, downhill
        v = sp.eigenvectors[:, 0]
        h = 1e-3 * max(1.0, float(np.linalg.norm(x)))
        cand = [x + h * v, x - h * v]
        x = min(cand, key=lambda z: _val(ls, z))
    raise RuntimeError(f"find_minimum could not reach a minimum from x0={x0!r}")


def find_minima(landscape: Landscape, *, n_starts: int = 64, seed: int = 0,
                box=None, dedupe_tol: float = 1e-5) -> list[np.ndarray]:
    """Distinct local minima found by descent from the landscape's hints
    (``landscape.minima()``) and ``n_starts`` scrambled-Halton points in ``box``
    (default ``landscape.box``), sorted by loss. Numerical, not guaranteed complete."""
    from scipy.stats import qmc

    ls = _check_landscape(landscape)
    box = np.asarray(box if box is not None else ls.box, dtype=np.float64)
    starts = [np.asarray(m, dtype=np.float64) for m in ls.minima()]
    if n_starts > 0:
        u = qmc.Halton(d=ls.dim, scramble=True, seed=seed).random(n_starts)
        starts += list(box[:, 0] + u * (box[:, 1] - box[:, 0]))
    found: list[np.ndarray] = []
    width = float(np.max(box[:, 1] - box[:, 0]))
    for s in starts:
        try:
            m = find_minimum(ls, s)
        except RuntimeError:
            continue
        if all(np.linalg.norm(m - f) > dedupe_tol * max(1.0, width) for f in found):
            found.append(m)
    found.sort(key=lambda z: _val(ls, z))
    return found


# ----------------------------------------------------------- string method
def _spline_path(path: np.ndarray):
    """Cubic spline of a polyline in its arc length; returns (spline, knot arc lengths)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=-1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    keep = np.concatenate([[True], seg > 1e-14 * max(1.0, s[-1])])
    s, p = s[keep], path[keep]
    if len(s) < 2:
        raise ValueError("path has zero length")
    bc = "not-a-knot" if len(s) >= 4 else "natural"
    return CubicSpline(s, p, axis=0, bc_type=bc), s


def _reparametrize(path: np.ndarray) -> np.ndarray:
    spline, s = _spline_path(path)
    return spline(np.linspace(0.0, s[-1], path.shape[0]))


def _string_method(ls: Landscape, a: np.ndarray, b: np.ndarray, n_images: int, *,
                   relax_endpoints: bool, tol: float, maxiter: int) -> np.ndarray:
    n = n_images
    t = np.linspace(0.0, 1.0, n)[:, None]
    path = a + t * (b - a)
    length = float(np.linalg.norm(b - a))
    if length == 0:
        raise ValueError("the two end points coincide")
    lo = 0 if relax_endpoints else 1
    hi = n if relax_endpoints else n - 1

    def stiffness(P):
        H = np.asarray(to_numpy(ls.hessian(P)), dtype=np.float64)
        return max(1e-12, float(np.max(np.abs(np.linalg.eigvalsh(0.5 * (H + np.swapaxes(H, -1, -2)))))))

    dt = 0.25 / stiffness(path)
    h_cap = 0.25 * length / (n - 1)
    for it in range(maxiter):
        g = np.asarray(to_numpy(ls.grad(path[lo:hi])), dtype=np.float64)
        if not np.all(np.isfinite(g)):
            raise RuntimeError(f"non-finite gradient on the string at iteration {it}")
        step = -dt * g
        sn = np.linalg.norm(step, axis=-1, keepdims=True)
        step *= np.minimum(1.0, h_cap / np.maximum(sn, 1e-300))
        new = path.copy()
        new[lo:hi] += step
        new = _reparametrize(new)
        if not relax_endpoints:
            new[0], new[-1] = a, b
        change = float(np.max(np.linalg.norm(new - path, axis=-1))) / dt
        path = new
        if it % 200 == 199:
            dt = 0.25 / stiffness(path)
        if change < tol:
            break
    return path


def minimum_energy_path(landscape: Landscape, a, b, n_images: int = 41, *, relax_endpoints: bool = False,
                        tol: float = 1e-7, maxiter: int = 50000) -> np.ndarray:
    """The minimum-energy path from ``a`` to ``b`` — **exact result** (numerical, the
    string method): ``n_images`` points equally spaced in arc length along which ∇L is
    parallel to the path. ``a`` and ``b`` are kept fixed (they should be minima) unless
    ``relax_endpoints``, in which case they descend to the minima of their basins.
    Converged when the image velocity ``|Δθ|/Δt`` (the perpendicular gradient) falls
    below ``tol·scale``. Returns an array ``(n_images, d)``."""
    ls = _check_landscape(landscape)
    a = C.point("a", a, ls.dim)
    b = C.point("b", b, ls.dim)
    n_images = C.check_int("n_images", n_images, minimum=3)
    scale = _gscale(ls, a, b)
    return _string_method(ls, a, b, n_images, relax_endpoints=relax_endpoints, tol=tol * scale,
                          maxiter=int(maxiter))


def _path_maximum(ls: Landscape, path: np.ndarray, first: bool) -> np.ndarray:
    """The maximum of L along the spline of the path: the highest one, or (``first``)
    the first barrier met from ``path[0]`` (before any interior local minimum)."""
    spline, s = _spline_path(path)
    ss = np.linspace(0.0, s[-1], 40 * len(s))
    v = _vals(ls, spline(ss))
    if first:
        # stop at the first interior local minimum after a rise
        k_max = len(v) - 1
        for k in range(1, len(v) - 1):
            if v[k] <= v[k - 1] and v[k] < v[k + 1] and np.max(v[:k]) > v[0]:
                k_max = k
                break
        k = int(np.argmax(v[: k_max + 1]))
    else:
        k = int(np.argmax(v))
    k = min(max(k, 1), len(ss) - 2)
    res = optimize.minimize_scalar(lambda q: -_val(ls, spline(q)), bounds=(ss[k - 1], ss[k + 1]),
                                   method="bounded", options={"xatol": 1e-12 * max(1.0, s[-1])})
    return np.asarray(spline(res.x), dtype=np.float64)


def find_saddle(landscape: Landscape, minimum_a, minimum_b, *, n_images: int = 41, gtol: float = 1e-10,
                which: str = "highest", relax_endpoints: bool = True,
                return_path: bool = False):
    """The index-1 saddle between two minima — **exact result** (numerical).

    The minima are first polished with :func:`find_minimum`; the string method gives the
    minimum-energy path; its maximum (``which="highest"``: the rate-limiting saddle;
    ``which="first"``: the first saddle met from ``minimum_a``, the exit of its basin) is
    refined by eigenvector-following Newton steps to ``|∇L| ≤ gtol·scale``. Raises
    ``RuntimeError`` unless the Hessian there has exactly one negative eigenvalue.
    Returns the saddle ``(d,)`` (and the path ``(n_images, d)`` if ``return_path``).
    """
    ls = _check_landscape(landscape)
    C.check_choice("which", which, ("highest", "first"))
    a = C.point("minimum_a", minimum_a, ls.dim)
    b = C.point("minimum_b", minimum_b, ls.dim)
    if relax_endpoints:
        a, b = find_minimum(ls, a), find_minimum(ls, b)
    dist = float(np.linalg.norm(b - a))
    if dist < 1e-8 * max(1.0, float(np.linalg.norm(a))):
        raise ValueError(f"minimum_a and minimum_b lie in the same basin (both relax to {a!r})")
    path = minimum_energy_path(ls, a, b, n_images)
    x0 = _path_maximum(ls, path, first=(which == "first"))
    scale = _gscale(ls, a, b)
    x = _newton_polish(ls, x0, n_negative=1, gtol=gtol * scale, radius=0.5 * dist / (n_images - 1) + 1e-3 * dist)
    sp = stationary_point(ls, x)
    if sp.grad_norm > 1e3 * gtol * scale or sp.index != 1:
        raise RuntimeError(
            f"saddle search between {a!r} and {b!r} did not converge to an index-1 saddle: "
            f"got x={x!r}, |grad L|={sp.grad_norm:.3g}, Hessian eigenvalues={sp.eigenvalues!r}")
    return (x, path) if return_path else x


# ----------------------------------------------------------------- Kramers
@dataclass(frozen=True)
class KramersResult:
    """The Eyring-Kramers escape rate and the stationary points behind it.

    ``rate`` = ``prefactor · exp(−arrhenius_exponent)``; ``barrier`` = L(saddle) − L(min);
    ``eigenvalues_min`` / ``eigenvalues_saddle`` are the Hessian spectra of L (ascending;
    ``lambda_minus`` = the negative one at the saddle); ``D``, ``mu`` and the temperature
    ``T = D/mu`` as used."""

    rate: float
    barrier: float
    prefactor: float
    arrhenius_exponent: float
    minimum: np.ndarray
    saddle: np.ndarray
    eigenvalues_min: np.ndarray
    eigenvalues_saddle: np.ndarray
    lambda_minus: float
    D: float
    mu: float

    @property
    def temperature(self) -> float:
        return self.D / self.mu

    @property
    def log_rate(self) -> float:
        """``log k = log(prefactor) − μΔL/D``: finite where ``rate`` underflows to 0 (small ``D``)."""
        return float(np.log(self.prefactor)) - self.arrhenius_exponent

    @property
    def mean_escape_time_leading_order(self) -> float:
        """``1/rate``: the Eyring-Kramers mean escape time, **leading order** as ``D/μ → 0`` (for the
        1-D double well ``(θ²−1)²`` at D = 1: 3.02, against the exact 3.57 of
        :meth:`mean_escape_time_exact`)."""
        return 1.0 / self.rate if self.rate > 0 else float("inf")

    def mean_escape_time_exact(self, landscape: Landscape, target=None) -> float:
        """The exact mean time from ``minimum`` to ``target`` (default: the minimum on the other
        side of ``saddle``) — **exact result**, by the 1-D double integral
        (:func:`hhld.theory.passage.mean_first_passage_time_1d`); 1-D landscapes only. In 2-3 D use
        the grid: :func:`hhld.fokker_planck.mfpt.mean_first_passage_time` or
        :func:`hhld.fokker_planck.mfpt.transition_rate`."""
        from .passage import escape_time_exact_1d

        ls = _check_landscape(landscape)
        if ls.dim != 1:
            raise ValueError(f"mean_escape_time_exact is for 1-D landscapes (got dim={ls.dim}); in 2-3 D use "
                             "hhld.fokker_planck.mfpt.mean_first_passage_time(fp, target) on a grid")
        if target is None:
            beyond = self.saddle + (self.saddle - self.minimum)
            target = find_minimum(ls, beyond)
        return escape_time_exact_1d(ls, self.minimum, target, self.D, self.mu)


def kramers_rate(landscape: Landscape, minimum, saddle=None, D=None, mu: float = 1.0, *,
                 target=None, n_images: int = 41, n_starts: int = 32, seed: int = 0,
                 warn: bool = True) -> KramersResult:
    """Overdamped Eyring-Kramers escape rate from ``minimum`` — **exact result to leading order**
    as D/μ → 0 (not exact at finite D: see :meth:`KramersResult.mean_escape_time_exact`,
    :mod:`hhld.theory.passage` and :mod:`hhld.fokker_planck.mfpt` for the exact rates) for
    ``dθ = −μ∇L dt + √(2D) dW``::

        k = (μ|λ⁻|/2π) · √(det H_min / |det H_saddle|) · exp(−μΔL/D)

    ``minimum`` is polished numerically. ``saddle``: a point near the saddle (polished by
    Newton), or ``None`` to find it: through the string method towards ``target`` if
    given, else towards every other minimum found by :func:`find_minima` (``n_starts``
    Halton starts, ``seed``), keeping the lowest exit saddle of the basin. For the 1-D
    double well ``(θ²−1)²`` this is ``√(8·4)/(2π)·exp(−1/D)`` at μ = 1.

    A barrier below :data:`KRAMERS_MIN_EXPONENT` ``D/μ`` and a rate that underflows give a
    :class:`hhld._validation.LeadingOrderWarning`; ``warn=False`` is for a sweep that compares the
    formula with measured or exact rates across its range (the validation experiments do).
    """
    ls = _check_landscape(landscape)
    if D is None:
        raise TypeError("kramers_rate needs the diffusion D (D > 0)")
    D = C.real("D", D, positive=True)
    mu = C.real("mu", mu, positive=True)
    m = find_minimum(ls, C.point("minimum", minimum, ls.dim))
    if saddle is not None:
        s0 = C.point("saddle", saddle, ls.dim)
        s = _newton_polish(ls, s0, n_negative=1, gtol=1e-10 * _gscale(ls, m, s0),
                           radius=0.05 * max(1e-3, float(np.linalg.norm(s0 - m))))
    else:
        if target is not None:
            others = [find_minimum(ls, C.point("target", target, ls.dim))]
        else:
            width = float(np.max(np.diff(np.asarray(ls.box), axis=1)))
            others = [o for o in find_minima(ls, n_starts=n_starts, seed=seed)
                      if np.linalg.norm(o - m) > 1e-5 * max(1.0, width)]
        if not others:
            raise ValueError(f"no other minimum found for {ls!r}: no barrier to escape over "
                             "(pass saddle= or target=)")
        best = None
        for o in others:
            try:
                s_try = find_saddle(ls, m, o, n_images=n_images, which="first", relax_endpoints=False)
            except RuntimeError:
                continue
            if best is None or _val(ls, s_try) < _val(ls, best):
                best = s_try
        if best is None:
            raise RuntimeError(f"no index-1 saddle found out of the basin of {m!r}")
        s = best
    spm, sps = stationary_point(ls, m), stationary_point(ls, s)
    if spm.index != 0 or np.any(spm.eigenvalues <= 0):
        raise RuntimeError(f"minimum is not a non-degenerate minimum: eigenvalues {spm.eigenvalues!r}")
    if sps.index != 1:
        raise RuntimeError(f"saddle {s!r} is not index-1: Hessian eigenvalues {sps.eigenvalues!r}")
    barrier = sps.value - spm.value
    lam_minus = float(sps.eigenvalues[0])
    # √(det H_min/|det H_s|) via log-determinants (stable in high d)
    log_ratio = float(np.sum(np.log(spm.eigenvalues)) - np.sum(np.log(np.abs(sps.eigenvalues))))
    prefactor = mu * abs(lam_minus) / (2.0 * np.pi) * float(np.exp(0.5 * log_ratio))
    expo = mu * barrier / D
    rate = prefactor * float(np.exp(-expo))
    if warn:
        _check_kramers_range(expo, rate, D)
    return KramersResult(rate=rate, barrier=barrier, prefactor=prefactor,
                         arrhenius_exponent=expo, minimum=m, saddle=s, eigenvalues_min=spm.eigenvalues,
                         eigenvalues_saddle=sps.eigenvalues, lambda_minus=lam_minus, D=D, mu=mu)


#: below this ``μΔL/D`` the Eyring-Kramers rate is flagged (:class:`hhld._validation.LeadingOrderWarning`)
KRAMERS_MIN_EXPONENT = 5.0


def _check_kramers_range(expo: float, rate: float, D: float) -> None:
    """One :class:`~hhld._validation.LeadingOrderWarning` when the barrier is below :data:`KRAMERS_MIN_EXPONENT`
    ``D/μ`` (the formula is leading order as ``D/μ → 0``: on the 1-D double well it is −47 % off the exact rate at
    ``μΔL/D = 0.2`` and +18 % at 1), or when the rate underflows to 0 (use ``KramersResult.log_rate``). Until
    2026-12-02 both were plain numbers."""
    import warnings

    from .._validation import LeadingOrderWarning

    if expo < KRAMERS_MIN_EXPONENT:
        warnings.warn(f"kramers_rate at D={D!r}: the barrier is {expo:.3g} D/mu (below {KRAMERS_MIN_EXPONENT:g}), "
                      "where the Eyring-Kramers formula, leading order as D/mu -> 0, is off by tens of percent; for "
                      "the exact rate use KramersResult.mean_escape_time_exact (1-D) or "
                      "hhld.fokker_planck.mfpt.transition_rate", LeadingOrderWarning, stacklevel=3)
    elif rate == 0.0:
        warnings.warn(f"kramers_rate at D={D!r}: exp(-{expo:.4g}) underflows, the rate is 0.0 in float64; "
                      "KramersResult.log_rate holds its logarithm", LeadingOrderWarning, stacklevel=3)


def arrhenius_exponent(barrier, D, mu: float = 1.0):
    """``μ·ΔL/D``, the exponent of the Arrhenius factor ``exp(−μΔL/D)`` — **exact result**
    (the leading behaviour of every escape rate as D → 0: ``−log k ≈ μΔL/D``).
    ``barrier`` is ΔL (>= 0) or a :class:`KramersResult`."""
    if isinstance(barrier, KramersResult):
        barrier = barrier.barrier
    dl = C.real("barrier", barrier, nonnegative=True)
    D = C.real("D", D, positive=True)
    mu = C.real("mu", mu, positive=True)
    return C.out(np.asarray(mu) * np.asarray(dl) / np.asarray(D))
