"""Phase-transition detection and tunneling kicks (the documents' ``train`` loop, per particle).

The documents: after each step, if ``C < transition_threshold and step > 10`` a phase
transition is "detected" and the particle is kicked ``theta += 3 hbar * u`` with ``u`` a
random unit direction and ``hbar = sqrt(eta D)``. Here the same rule acts on every
particle of an ensemble at once (vectorised), with the amplitude factor, threshold and
step guard configurable. The rule is a policy applied between steps by the driver, not
part of an integrator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._backend import is_torch, standard_normal, to_numpy
from .._validation import check_nonnegative, check_positive
from ..observables import consolidation_ratio

__all__ = ["TunnelingPolicy", "random_unit_directions", "kick"]


def random_unit_directions(rng, n: int, like_x):
    """``n`` uniformly random unit vectors in ``R^d`` (d = like_x.shape[1])."""
    v = standard_normal(rng, (n, like_x.shape[1]), like_x)
    if is_torch(v):
        return v / v.norm(dim=1, keepdim=True)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def kick(rng, theta, mask, amplitude: float):
    """Return ``theta`` with the particles in ``mask`` moved by ``amplitude`` along random
    unit directions (input not modified)."""
    idx = np.flatnonzero(to_numpy(mask))
    out = theta.clone() if is_torch(theta) else theta.copy()
    if idx.size:
        u = random_unit_directions(rng, idx.size, theta)
        if is_torch(theta):
            import torch

            ti = torch.as_tensor(idx, device=theta.device)
            out[ti] = out[ti] + amplitude * u
        else:
            out[idx] += amplitude * u
    return out


@dataclass(frozen=True)
class TunnelingPolicy:
    """The documents' phase-transition rule.

    ``threshold``: kick when ``C < threshold`` (documents: 0.5); ``amplitude_factor``:
    kick length in units of ``hbar = sqrt(eta D)`` (documents: 3); ``min_step``: only
    after this step (documents: ``step > 10``); ``eta``: the documents' inertia.
    """

    eta: float
    D: float
    threshold: float = 0.5
    amplitude_factor: float = 3.0
    min_step: int = 10

    def __post_init__(self):
        check_positive("eta", self.eta)
        check_nonnegative("D", self.D)
        check_nonnegative("threshold", self.threshold)
        check_nonnegative("amplitude_factor", self.amplitude_factor)

    @property
    def hbar(self) -> float:
        return math.sqrt(self.eta * self.D)

    @property
    def amplitude(self) -> float:
        return self.amplitude_factor * self.hbar

    def detect(self, grad, step: int):
        """Boolean mask (numpy) of particles in a "phase transition" after ``step``,
        and their consolidation ratios."""
        C = consolidation_ratio(grad, self.D)
        Cn = to_numpy(C)
        if step <= self.min_step:
            return np.zeros(Cn.shape, dtype=bool), Cn
        return Cn < self.threshold, Cn
