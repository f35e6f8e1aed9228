"""The entropy coupling of the Neural Heisenberg Hamiltonian ``H = pi^2/2eta + L + (lam/2) S[rho]^2``.

For an ensemble with density rho, the functional derivative of ``(lam/2) S^2`` with
``S = -int rho log rho`` is ``lam S (-log rho - 1)``, so each particle feels the force

    F_i = -grad_theta [lam S (-log rho(theta_i))] = lam S grad log rho(theta_i) = -lam S grad_theta S_i

i.e. the documents' "-lam S grad_theta S" with the per-particle entropy gradient
``grad_theta S_i = -grad log rho(theta_i)``. Both ``S`` and the score ``grad log rho``
are estimated from the ensemble itself: ``S`` by the Kozachenko-Leonenko estimator
(:func:`hhld.observables.entropy_knn`) and the score by a Gaussian kernel density
estimate with Scott's bandwidth (exact gradient of the KDE's log-density; O(N^2)
memory in blocks, use a subsample ``n_ref`` of reference particles for large N).
With ``lam = 0`` the force is identically zero and nothing is computed. (The documents'
reference code accepts ``lam`` but never uses it.)

The force drives ``S`` towards 0: for ``S > 0`` it pulls particles up the density
gradient (concentrating the ensemble), for ``S < 0`` it spreads them.
"""
from __future__ import annotations

import numpy as np

from .._backend import is_torch, like, to_numpy
from .._validation import check_int, check_nonnegative, check_positive
from ..observables import _samples, entropy_knn

__all__ = ["kde_score", "EntropyCoupling"]


def kde_score(points, reference=None, bandwidth: float | None = None, block: int = 4096) -> np.ndarray:
    """``grad log rho_KDE(points)`` for a Gaussian KDE on ``reference`` (default: points), ``(N, d)`` arrays
    (a 1-D array is ``(N, 1)``).

    ``bandwidth`` (> 0, finite) defaults to Scott's rule on ``reference``: the mean per-axis standard deviation
    times ``n^(-1/(d+4))``. That needs at least 2 reference points with some spread: reference points that are all
    one point (zero spread: every particle started at the same place) give bandwidth 0 and the score 0/0, and are
    refused with a ``ValueError`` (until 2026-12-02 they gave all-NaN scores in silence), as is a spread so small
    that the squared bandwidth underflows."""
    x = _samples(points, "kde_score: points")
    ref = x if reference is None else _samples(reference, "kde_score: reference")
    block = check_int("block", block, minimum=1)
    n, d = ref.shape
    if x.shape[1] != d:
        raise ValueError(f"kde_score: points have d={x.shape[1]} coordinates, reference has d={d}; they must agree")
    if bandwidth is None:
        if n < 2:
            raise ValueError(f"kde_score: Scott's bandwidth needs at least 2 reference points, got N={n}; give more "
                             "points or an explicit bandwidth > 0")
        if not np.any(np.ptp(ref, axis=0) > 0):
            raise ValueError(f"kde_score: all N={n} reference points are the same point {ref[0].tolist()} (zero "
                             "spread), so Scott's bandwidth is 0 and the score is 0/0; give points with some spread "
                             "(e.g. add small noise to them) or an explicit bandwidth > 0")
        sd = ref.std(axis=0, ddof=1).mean()
        bandwidth = sd * n ** (-1.0 / (d + 4))  # Scott's rule
        how = f"{bandwidth:.3g} (Scott's rule on the reference points, standard deviation {sd:.3g})"
    else:
        bandwidth = check_positive("bandwidth", bandwidth)
        how = f"{bandwidth!r} (given)"
    h2 = float(bandwidth) ** 2
    if not 0.0 < h2 < np.inf:
        raise ValueError(f"kde_score: the bandwidth {how} squared is {h2!r}, outside the floating-point range; "
                         "rescale the points to a spread nearer 1 (the score scales as 1/scale)")
    out = np.empty_like(x)
    for s in range(0, x.shape[0], block):
        xb = x[s:s + block]
        diff = ref[None, :, :] - xb[:, None, :]           # (b, n, d)
        logw = -0.5 * (diff * diff).sum(-1) / h2           # (b, n)
        logw -= logw.max(axis=1, keepdims=True)
        w = np.exp(logw)
        w /= w.sum(axis=1, keepdims=True)
        out[s:s + block] = (w[:, :, None] * diff).sum(1) / h2
    return out


class EntropyCoupling:
    """Callable ``theta -> F_ext (N, d)`` giving ``-lam S grad_theta S`` per particle.

    ``n_ref``: number of reference particles for the KDE (a random subsample of the
    ensemble when N is larger; the subsample is drawn with ``rng``).
    """

    def __init__(self, lam: float, *, n_ref: int = 2000, bandwidth: float | None = None, k: int = 3, rng=None):
        self.lam = check_nonnegative("lam", lam)
        self.n_ref = int(n_ref)
        self.bandwidth = bandwidth
        self.k = k
        self.rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        self.last_entropy: float | None = None

    def check_ensemble(self, theta, name: str = "theta") -> None:
        """Refuse an ensemble the coupling cannot be computed on: ``S`` comes from the k-nearest-neighbour estimator
        (:func:`hhld.observables.entropy_knn`: more than ``k`` particles, none with ``k`` or more exact duplicates,
        else ``S = -inf``) and the score from a KDE with Scott's bandwidth (zero spread: bandwidth 0, score 0/0).
        Called by :class:`hhld.dynamics.Simulation` on ``theta0`` when ``lam > 0``, so that a start with every
        particle at one point (the ``np.tile(point, (N, 1))`` start) is refused at construction instead of making
        the force NaN. Non-finite positions are left to the caller's own check."""
        if self.lam == 0.0:
            return
        x = to_numpy(theta)
        if x.ndim != 2 or not np.all(np.isfinite(x)):
            return  # the shape and finiteness checks of the caller say what is wrong
        n = x.shape[0]
        advice = (f"add small noise to {name} (e.g. {name} + 1e-3 * rng.standard_normal({name}.shape)), or run "
                  f"with lam=0 first and start the lam > 0 run from the spread-out positions")
        if n <= self.k:
            raise ValueError(f"the entropy coupling lam={self.lam!r} > 0 estimates the entropy from k={self.k} nearest "
                             f"neighbours and needs more than {self.k} particles; {name} has {n}")
        points, counts = np.unique(np.asarray(x, dtype=np.float64), axis=0, return_counts=True)
        j = int(np.argmax(counts))
        if counts[j] > self.k:
            raise ValueError(
                f"the entropy coupling lam={self.lam!r} > 0 needs spread in {name}: {int(counts[j])} of its N={n} "
                f"particles sit at the same point {points[j].tolist()} ({len(points)} distinct point(s); at most "
                f"k={self.k} may coincide), so the k-nearest-neighbour entropy estimate is -inf (and, with every "
                f"particle at one point, the KDE score's bandwidth 0) and the force would not be a number; {advice}")

    def __call__(self, theta):
        if self.lam == 0.0:
            return theta * 0
        x = to_numpy(theta).astype(np.float64)
        ref = x
        if x.shape[0] > self.n_ref:
            ref = x[self.rng.choice(x.shape[0], self.n_ref, replace=False)]
        S = entropy_knn(ref, k=self.k)
        self.last_entropy = S
        if not np.isfinite(S):
            raise ValueError(f"the entropy coupling lam={self.lam!r}: the ensemble has collapsed (more than k={self.k} "
                             f"particles at one point), its entropy estimate is {S} and the force would not be a "
                             "number; use a larger D or a smaller lam, or add small noise to the positions")
        force = self.lam * S * kde_score(x, ref, self.bandwidth)
        return like(force, theta) if is_torch(theta) else force.astype(np.asarray(theta).dtype, copy=False)
