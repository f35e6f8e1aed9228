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
from .._validation import check_nonnegative
from ..observables import entropy_knn

__all__ = ["kde_score", "EntropyCoupling"]


def kde_score(points, reference=None, bandwidth: float | None = None, block: int = 4096) -> np.ndarray:
    """``grad log rho_KDE(points)`` for a Gaussian KDE on ``reference`` (default: points)."""
    x = to_numpy(points).astype(np.float64)
    ref = x if reference is None else to_numpy(reference).astype(np.float64)
    n, d = ref.shape
    if bandwidth is None:
        sd = ref.std(axis=0, ddof=1).mean()
        bandwidth = sd * n ** (-1.0 / (d + 4))  # Scott's rule
    h2 = float(bandwidth) ** 2
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

    def __call__(self, theta):
        if self.lam == 0.0:
            return theta * 0
        x = to_numpy(theta).astype(np.float64)
        ref = x
        if x.shape[0] > self.n_ref:
            ref = x[self.rng.choice(x.shape[0], self.n_ref, replace=False)]
        S = entropy_knn(ref, k=self.k)
        self.last_entropy = S
        force = self.lam * S * kde_score(x, ref, self.bandwidth)
        return like(force, theta) if is_torch(theta) else force.astype(np.asarray(theta).dtype, copy=False)
