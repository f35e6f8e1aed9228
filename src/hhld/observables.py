"""Observables of HHLD on gradients and ensembles.

* :func:`consolidation_ratio` -- the documents' ``C = ||grad L||^2 / (D d)``.
* :func:`consolidation_ratio_sgd` -- the documents' ``get_consolidation_metrics`` form
  ``C = ||g||^2 / (lr / B)`` on a squared norm, and :func:`get_consolidation_metrics`, the
  documents' function under its own name and signature (section 19, "How to Use This Today").
* :func:`classify_regime` -- the documents' regime table (quantum ``C < 1``,
  transition ``C ~ 0.5``, classical ``C > 5``), thresholds configurable.
* :func:`uncertainty_product` -- ``Delta theta_i * Delta d_iL`` per coordinate and in total.
* :func:`entropy_knn` (Kozachenko-Leonenko) and :func:`entropy_histogram` -- Shannon entropy
  ``S = -int rho log rho`` of an ensemble.
* :func:`kl_to_gibbs` -- ``KL(rho || rho*)`` with ``rho* ~ exp(-mu L / D)``.
* :func:`energy`, :func:`free_energy` -- ``E[L]`` and ``F = E[L] - (D/mu) S`` (the documents'
  ``F = E[L] - D S`` for ``mu = 1``).
* :func:`fit_decay_rate` -- the asymptotic rate of an exponential decay (e.g. ``KL(rho_t || rho*)``)
  fitted on the late part of a curve, as the validation suite measures Theorem 3.

All functions take numpy arrays or torch tensors (converted to numpy float64 for the
estimators that need sorting / neighbour search).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from ._backend import is_torch, to_numpy
from ._validation import NonFiniteError, check_choice, check_int, check_nonnegative, check_positive, check_real
from .theory.exact import gibbs_log_partition

__all__ = [
    "consolidation_ratio",
    "consolidation_ratio_sgd",
    "get_consolidation_metrics",
    "DecayFit",
    "fit_decay_rate",
    "RegimeThresholds",
    "classify_regime",
    "REGIMES",
    "UncertaintyProduct",
    "uncertainty_product",
    "entropy_knn",
    "entropy_histogram",
    "DegenerateSamplesWarning",
    "log_partition",
    "kl_to_gibbs",
    "energy",
    "free_energy",
]


# ------------------------------------------------------------ consolidation
def consolidation_ratio(grad_or_sq_norm, D, dim: int | None = None):
    """The documents' consolidation ratio ``C = ||grad L||^2 / (D * d)``.

    ``grad_or_sq_norm`` is either a gradient array ``(..., d)`` (numpy or torch; the
    norm is taken over the last axis and ``d`` is its length) or a squared norm
    ``||grad L||^2`` (scalar or array), in which case ``dim`` is required.
    ``D`` is the diffusion coefficient (``D > 0``).
    """
    D = check_positive("D", D)
    g = grad_or_sq_norm if is_torch(grad_or_sq_norm) else np.asarray(grad_or_sq_norm)
    if dim is None:
        if g.ndim == 0:
            raise ValueError("consolidation_ratio: pass a gradient array (..., d), or a squared norm with dim=")
        d = g.shape[-1]
        sq = (g * g).sum(-1)
    else:
        d = check_int("dim", dim, minimum=1)
        sq = g
        if bool((sq < 0).any()):
            raise ValueError(f"consolidation_ratio: a squared norm ||grad L||^2 must be >= 0, got a minimum of "
                             f"{float(sq.min())}")
    return sq / (D * d)


def consolidation_ratio_sgd(grad_sq_norm, lr, batch_size):
    """The documents' ``get_consolidation_metrics`` form: ``C = ||g||^2 / (lr / B)``.

    ``grad_sq_norm`` is the squared norm ``||g||^2`` (a real scalar >= 0, or a 0-d array / tensor);
    a gradient vector is refused (pass ``np.sum(g**2)``, or call :func:`get_consolidation_metrics`
    with the gradient). ``lr / B`` is what the documents call ``hbar^2`` (the "noise floor"); the
    dimension is deliberately not divided out, as in the documents.
    """
    lr = check_positive("lr", lr)
    b = check_int("batch_size", batch_size, minimum=1)
    if np.ndim(to_numpy(grad_sq_norm) if is_torch(grad_sq_norm) else grad_sq_norm) != 0:
        shape = tuple(getattr(grad_sq_norm, "shape", (len(grad_sq_norm),)))
        raise ValueError(
            f"consolidation_ratio_sgd expects the squared norm ||g||^2 (a scalar), got an array of shape {shape}; "
            "pass np.sum(g**2), or call get_consolidation_metrics(optimizer, g, batch_size) with the gradient")
    sq = check_nonnegative("grad_sq_norm", grad_sq_norm)
    return sq / (lr / b)


def _sum_of_squares(loss_grads) -> float:
    """``sum(g**2)`` over a tensor, an array, or a list of per-parameter gradients, in float64."""
    if isinstance(loss_grads, (list, tuple)):
        parts = [g for g in loss_grads if g is not None]
        if not parts:
            raise ValueError("loss_grads is an empty list (no parameter has a gradient)")
        return float(sum(_sum_of_squares(g) for g in parts))
    if is_torch(loss_grads):
        return float((loss_grads.detach().double() ** 2).sum())
    try:
        arr = np.asarray(loss_grads, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"loss_grads must be a tensor, an array or a list of per-parameter gradients, got "
                        f"{type(loss_grads).__name__}") from exc
    return float(np.sum(arr ** 2))


def get_consolidation_metrics(optimizer, loss_grads, batch_size) -> float:
    """The documents' ``get_consolidation_metrics(optimizer, loss_grads, batch_size)`` (section 19,
    "How to Use This Today") -- **the documents' form**: ``C = sum(loss_grads**2) / (lr / B)``
    with ``lr = optimizer.param_groups[0]['lr']`` and ``B = batch_size``.

    ``loss_grads``: the gradient as a tensor or an array (any shape), or a list of per-parameter
    gradients (``[p.grad for p in model.parameters()]``; ``None`` entries are skipped), summed in
    float64. The documents' reading: ``C << 1`` pure random walk, ``C ~ 1`` "critical" (where
    grokking often begins), ``C >> 1`` deterministic descent. Same number as
    :func:`consolidation_ratio_sgd` on ``sum(g**2)``. A non-finite sum raises
    :class:`hhld.NonFiniteError`.
    """
    try:
        lr = optimizer.param_groups[0]["lr"]
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise TypeError(f"optimizer must have param_groups[0]['lr'] (a torch optimizer), got "
                        f"{type(optimizer).__name__}") from exc
    sq = _sum_of_squares(loss_grads)
    if not np.isfinite(sq):
        raise NonFiniteError(f"get_consolidation_metrics: sum(loss_grads**2) = {sq} (non-finite gradients)",
                             quantity="consolidation")
    return float(consolidation_ratio_sgd(sq, lr, batch_size))


REGIMES = ("quantum", "transition", "intermediate", "classical")


@dataclass(frozen=True)
class RegimeThresholds:
    """Thresholds of the documents' regime table.

    The table reads: quantum ``C < 1``, transition ``C ~ 0.5``, classical ``C > 5``; it
    leaves ``1 <= C <= 5`` unnamed and puts "transition" inside the quantum range. hhld
    labels: ``classical`` for ``C > classical_above``; ``intermediate`` for
    ``quantum_below <= C <= classical_above``; ``transition`` for C within a factor
    ``transition_factor`` of ``transition_center`` (and below ``quantum_below``);
    ``quantum`` below that.
    """

    quantum_below: float = 1.0
    transition_center: float = 0.5
    transition_factor: float = 2.0
    classical_above: float = 5.0

    def __post_init__(self):
        if not (0 < self.quantum_below <= self.classical_above):
            raise ValueError(
                f"need 0 < quantum_below <= classical_above, got {self.quantum_below}, {self.classical_above}"
            )
        if self.transition_center <= 0 or self.transition_factor < 1:
            raise ValueError("transition_center must be > 0 and transition_factor >= 1")

    @property
    def transition_low(self) -> float:
        return self.transition_center / self.transition_factor

    @property
    def transition_high(self) -> float:
        return min(self.transition_center * self.transition_factor, self.quantum_below)


def classify_regime(C, thresholds: RegimeThresholds | None = None):
    """Regime label(s) for consolidation ratio(s) ``C`` (see :class:`RegimeThresholds`).

    A scalar gives a ``str``; an array gives an array of labels.
    """
    t = thresholds or RegimeThresholds()
    if isinstance(C, float):  # one host float (the training monitor's rows): the same labels, no arrays
        if C != C:
            raise ValueError("classify_regime: C contains NaN")
        if C < 0:
            raise ValueError(f"classify_regime: C = ||grad L||^2 / (D d) must be >= 0, got {float(C)!r}")
        return ("classical" if C > t.classical_above else "intermediate" if C >= t.quantum_below
                else "transition" if C >= t.transition_low else "quantum")
    c = to_numpy(C).astype(np.float64)
    if np.isnan(c).any():
        raise ValueError("classify_regime: C contains NaN")
    if (c < 0).any():
        raise ValueError(f"classify_regime: C = ||grad L||^2 / (D d) must be >= 0, got {float(c.min())!r}")
    labels = np.where(
        c > t.classical_above,
        "classical",
        np.where(
            c >= t.quantum_below,
            "intermediate",
            np.where(c >= t.transition_low, "transition", "quantum"),
        ),
    )
    return str(labels) if labels.ndim == 0 else labels


# ------------------------------------------------------------ uncertainty
@dataclass(frozen=True)
class UncertaintyProduct:
    """``per_coordinate[i] = sqrt(Var theta_i) * sqrt(Var d_i L)`` over the ensemble;
    ``total = sqrt(sum_i Var theta_i) * sqrt(sum_i Var d_i L)``; ``covariance[i] =
    Cov(theta_i, d_i L)`` (which equals ``D/mu`` at stationarity, Stein's identity)."""

    per_coordinate: np.ndarray
    total: float
    covariance: np.ndarray
    var_theta: np.ndarray
    var_grad: np.ndarray
    n: int

    def standard_errors(self) -> np.ndarray:
        """Delta-method standard error of each per-coordinate product, assuming
        independent samples (a lower bound for correlated samples)."""
        # log product = 0.5 (log var_t + log var_g); var of a sample variance ~ 2 var^2/(n-1) (Gaussian)
        rel = np.sqrt(0.25 * (2.0 / (self.n - 1)) * 2.0)
        return self.per_coordinate * rel


def uncertainty_product(theta, grad) -> UncertaintyProduct:
    """Uncertainty product of an ensemble: ``theta`` and ``grad`` of shape ``(N, d)``."""
    th = to_numpy(theta).astype(np.float64)
    g = to_numpy(grad).astype(np.float64)
    if th.ndim != 2 or th.shape != g.shape:
        raise ValueError(f"theta and grad must both be (N, d); got {th.shape} and {g.shape}")
    n = th.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples, got N={n}")
    for name, arr in (("theta", th), ("grad", g)):
        if not np.isfinite(arr).all():
            raise NonFiniteError(f"uncertainty_product: {name} has {int((~np.isfinite(arr)).sum())} non-finite "
                                 f"value(s), first at index {tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])}",
                                 quantity=name)
    # each column scaled by its largest |entry| first: no overflow (and no 0 * inf = NaN) in the
    # squares of large gradients; the results overflow to inf only where they truly exceed 1e308
    st, sg = _col_scale(th), _col_scale(g)
    a, b = th / st, g / sg
    vta, vgb = a.var(axis=0, ddof=1), b.var(axis=0, ddof=1)
    sd_t, sd_g = np.sqrt(vta) * st, np.sqrt(vgb) * sg
    cov_ab = ((a - a.mean(0)) * (b - b.mean(0))).sum(0) / (n - 1)
    with np.errstate(over="ignore"):
        tot_t = float(np.sqrt(np.sum((sd_t / sd_t.max()) ** 2)) * sd_t.max()) if sd_t.max() > 0 else 0.0
        tot_g = float(np.sqrt(np.sum((sd_g / sd_g.max()) ** 2)) * sd_g.max()) if sd_g.max() > 0 else 0.0
        return UncertaintyProduct(
            per_coordinate=sd_t * sd_g,
            total=tot_t * tot_g,
            covariance=(cov_ab * st) * sg,
            var_theta=sd_t * sd_t,
            var_grad=sd_g * sd_g,
            n=n,
        )


def _col_scale(x: np.ndarray) -> np.ndarray:
    """Largest ``|x|`` per column (1 for an all-zero column)."""
    s = np.abs(x).max(axis=0)
    return np.where(s > 0, s, 1.0)


# ------------------------------------------------------------------ entropy
class DegenerateSamplesWarning(RuntimeWarning):
    """The samples have no spread where an entropy estimator needs one (duplicated points, an
    axis on which every sample is equal): the estimate is ``-inf``, the entropy of a distribution
    with atoms."""


def _samples(samples, who: str) -> np.ndarray:
    """``samples`` as a finite real float64 array ``(N, d)`` (a 1-D array is ``(N, 1)``)."""
    x = to_numpy(samples)
    if np.iscomplexobj(x):
        raise TypeError(f"{who}: samples must be real, got a complex array")
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{who}: samples must be a real array (N, d), got {type(samples).__name__}: {exc}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{who}: samples must have shape (N, d) or (N,), got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise NonFiniteError(f"{who}: samples have {int(bad.sum())} non-finite value(s), first at index "
                             f"{tuple(int(i) for i in np.argwhere(bad)[0])}", quantity="samples")
    return x


def _warn_degenerate(message: str) -> float:
    import warnings

    warnings.warn(message, DegenerateSamplesWarning, stacklevel=3)
    return float("-inf")


def entropy_knn(samples, k: int = 3) -> float:
    """Kozachenko-Leonenko k-nearest-neighbour estimate of the differential entropy
    ``S = -int rho log rho`` (nats) of samples ``(N, d)``.

    ``S ~ psi(N) - psi(k) + log V_d + (d/N) sum_i log eps_i`` with ``eps_i`` the distance
    to the k-th neighbour and ``V_d`` the volume of the unit d-ball (Kraskov et al. 2004,
    eq. 20). Consistent; bias decays with N. The distances are computed on the samples scaled
    to unit size (``S`` shifts by ``d log s`` exactly), so that any scale from 1e-300 to 1e300
    works.

    Duplicated points: when ``k + 1`` or more samples coincide, some ``eps_i`` is 0 and the
    estimate is ``-inf`` (the entropy of a distribution with an atom); it is returned with a
    :class:`DegenerateSamplesWarning` naming the duplicates, never clamped. Drop the duplicates
    or add the noise they lost if a finite number is wanted. Non-finite samples raise
    :class:`hhld.NonFiniteError`.
    """
    from scipy.spatial import cKDTree

    x = _samples(samples, "entropy_knn")
    n, d = x.shape
    k = check_int("k", k, minimum=1)
    if n <= k:
        raise ValueError(f"entropy_knn needs more than k={k} samples, got N={n}")
    xc = x - x.mean(axis=0)
    scale = float(np.max(np.abs(xc)))
    if scale == 0.0:
        return _warn_degenerate(f"entropy_knn: all N={n} samples are the same point; the entropy estimate is -inf")
    dist, idx = cKDTree(xc / scale).query(xc / scale, k=k + 1)
    eps = dist[:, -1]
    zero = eps == 0
    if zero.any():
        i = int(np.argmax(zero))
        return _warn_degenerate(
            f"entropy_knn: {int(zero.sum())} of N={n} samples have k={k} or more exact duplicates (e.g. sample {i} "
            f"= samples {sorted(int(j) for j in idx[i] if j != i)[:k]}), so their k-th neighbour distance is 0 and "
            "the entropy estimate is -inf; drop the duplicates or add noise for a finite estimate")
    log_vd = (d / 2) * np.log(np.pi) - special.gammaln(d / 2 + 1)
    return float(special.digamma(n) - special.digamma(k) + log_vd + d * (np.mean(np.log(eps)) + np.log(scale)))


def entropy_histogram(samples, bins=64, range=None) -> float:  # noqa: A002 - numpy's name
    """Plug-in histogram estimate of the differential entropy (nats) for d <= 3:
    ``-sum p_j log(p_j / vol_j)``. Biased low by O(bins/N); use for low dimension.

    Samples on which an axis has no spread give ``-inf`` with a :class:`DegenerateSamplesWarning`
    (numpy would invent a bin width); samples outside an explicit ``range`` are an error (they
    would be dropped and the rest renormalised)."""
    x = _samples(samples, "entropy_histogram")
    if x.shape[1] > 3:
        raise ValueError(f"entropy_histogram is for d <= 3, got d={x.shape[1]}; use entropy_knn")
    if x.shape[0] < 2:
        raise ValueError(f"entropy_histogram needs at least 2 samples, got N={x.shape[0]}")
    if range is None:
        flat = np.flatnonzero(np.ptp(x, axis=0) == 0)
        if flat.size:
            return _warn_degenerate(f"entropy_histogram: every sample has the same value on axis {int(flat[0])}; "
                                    "the entropy estimate is -inf")
    h, edges = np.histogramdd(x, bins=bins, range=range)
    if h.sum() < x.shape[0]:
        raise ValueError(f"entropy_histogram: {x.shape[0] - int(h.sum())} of N={x.shape[0]} samples lie outside "
                         f"range={range!r}; give a range that holds every sample (or none)")
    vol = np.ones_like(h)
    for ax, e in enumerate(edges):
        shape = [1] * x.shape[1]
        shape[ax] = -1
        vol = vol * np.diff(e).reshape(shape)
    p = h / h.sum()
    m = p > 0
    return float(-(p[m] * np.log(p[m] / vol[m])).sum())


_ENTROPY = {"knn": entropy_knn, "histogram": entropy_histogram}


#: ``log Z = log int exp(-mu L / D) dtheta``: the library's one log-partition function,
#: :func:`hhld.theory.gibbs_log_partition` (quadrature on the landscape's box, d <= 3; warns with
#: :class:`hhld._validation.BoxTruncationWarning` when the box cuts off Gibbs mass)
log_partition = gibbs_log_partition


def kl_to_gibbs(samples, landscape, D, mu: float = 1.0, *, entropy: str = "knn", log_z: float | None = None,
                **entropy_kwargs) -> float:
    """``KL(rho || rho*)`` for an ensemble, ``rho* = exp(-mu L/D) / Z``:
    ``KL = -S[rho] + (mu/D) E_rho[L] + log Z``.

    ``entropy`` is ``"knn"`` or ``"histogram"``; ``log Z`` by quadrature on the landscape's box
    unless given (warns when the box cuts off Gibbs mass, see :func:`log_partition`).
    """
    D = check_positive("D", D)
    mu = check_positive("mu", mu)
    check_choice("entropy", entropy, tuple(_ENTROPY))
    if log_z is not None:
        log_z = check_real("log_z", log_z)
    x = _samples(samples, "kl_to_gibbs")
    S = _ENTROPY[entropy](x, **entropy_kwargs)
    lz = log_partition(landscape, D, mu) if log_z is None else float(log_z)
    return float(-S + (mu / D) * energy(x, landscape) + lz)


def energy(samples, landscape) -> float:
    """``E[L]`` over the ensemble (non-finite samples or losses raise :class:`hhld.NonFiniteError`)."""
    v = to_numpy(landscape.value(samples if is_torch(samples) else _samples(samples, "energy")))
    if not np.isfinite(v).all():
        raise NonFiniteError(f"energy: the loss is non-finite at {int((~np.isfinite(v)).sum())} sample(s)",
                             quantity="loss")
    return float(np.mean(v))


def free_energy(samples, landscape, D, mu: float = 1.0, *, entropy: str = "knn", **entropy_kwargs) -> float:
    """``F = E[L] - (D/mu) S[rho]`` (the documents' ``F = E[L] - D S`` for ``mu = 1``).

    At the Gibbs density ``F* = -(D/mu) log Z`` and ``F - F* = (D/mu) KL`` (the free-energy
    identity, :func:`hhld.theory.free_energy_identity`).
    """
    D = check_nonnegative("D", D)
    mu = check_positive("mu", mu)
    check_choice("entropy", entropy, tuple(_ENTROPY))
    x = _samples(samples, "free_energy")
    S = _ENTROPY[entropy](x, **entropy_kwargs)
    return energy(x, landscape) - (D / mu) * S


# ------------------------------------------------------------------ decay fits
@dataclass(frozen=True)
class DecayFit:
    """``rate`` of ``y ~ A exp(-rate t)`` fitted on the late part of a curve, its standard error
    ``stderr`` (least squares on ``log y``), the number of points used ``n`` and the fit window
    ``t_range``."""

    rate: float
    stderr: float
    n: int
    t_range: tuple


def fit_decay_rate(times, values, *, late_fraction: float = 0.4, floor: float = 1e-11,
                   reference: float | None = None) -> DecayFit:
    """The asymptotic decay rate ``-d log y/dt`` of a decaying positive curve (``KL(rho_t||rho*)``,
    a density's distance to equilibrium ...), fitted by least squares of ``log y`` on ``t`` over the
    late part ``t >= late_fraction * max(t)`` where ``y > floor * reference`` (``reference``
    default: ``max(y)``; points below it are round-off). This is the validation suite's fit of
    Theorem 3 (``convergence``). Needs 3 points in the window, else a ``ValueError`` saying what
    is missing."""
    t = np.asarray(to_numpy(times), dtype=np.float64).ravel()
    y = np.asarray(to_numpy(values), dtype=np.float64).ravel()
    if t.shape != y.shape:
        raise ValueError(f"times and values must have the same length, got {t.size} and {y.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError("times and values must be finite")
    if not 0 <= late_fraction < 1:
        raise ValueError(f"late_fraction must be in [0, 1), got {late_fraction!r}")
    ref = float(np.max(y)) if reference is None else check_positive("reference", reference)
    m = (y > floor * ref) & (t >= late_fraction * t.max())
    if m.sum() < 3:
        raise ValueError(f"fit_decay_rate needs 3 points with t >= {late_fraction} t_max and y above "
                         f"{floor:g} x {ref:.3g}, got {int(m.sum())}")
    tt, ly = t[m], np.log(y[m])
    A = np.vstack([np.ones_like(tt), tt]).T
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    dof = max(tt.size - 2, 1)
    sxx = float(np.sum((tt - tt.mean()) ** 2))
    se = float(np.sqrt(np.sum(resid ** 2) / dof / sxx)) if tt.size > 2 and sxx > 0 else float("nan")
    return DecayFit(rate=float(-coef[1]), stderr=se, n=int(tt.size), t_range=(float(tt.min()), float(tt.max())))
