"""The emergent "Planck constant" and "mass": units of the quantum picture.

Every solver of :mod:`hhld.quantum` takes ``hbar`` and ``m`` as plain parameters.
This module turns the paper's and the documents' learning parameters into them.

Paper (Katsnelson & Vanchurin, "Emergent Quantumness in Neural Networks"):

* (2.10) ``m = eps / (2 gamma)`` -- the paper's definition (exact by construction);
* (2.11) ``hbar = eps * sqrt(4 D / (gamma lambda))`` -- the paper's definition;
* (3.12) ``hbar = +- mu eps / (2 pi)`` -- the multivaluedness condition (3.7) with the
  chemical potential ``mu``; the paper's result under its assumptions;
* (4.5) ``Delta N = sqrt(T d^2 Omega / d mu^2)`` -- the paper writes it in this form;
  the exact grand-canonical fluctuation is ``<N^2> - <N>^2 = -T d^2 Omega / d mu^2``
  (with ``Omega = F - mu N``, ``d^2 Omega / d mu^2 <= 0``), so the sign is that of the
  paper's convention. :func:`number_uncertainty` takes the absolute value and says so.

Documents (HHLD README): ``hbar = sqrt(eta D)`` (a definition).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._validation import check_positive, check_real

__all__ = [
    "QuantumUnits",
    "mass_from_learning",
    "hbar_from_learning",
    "hbar_from_eta_D",
    "hbar_from_chemical_potential",
    "number_uncertainty",
]


def mass_from_learning(epsilon: float, gamma: float) -> float:
    """(2.10) ``m = eps / (2 gamma)`` (the paper's definition)."""
    return check_positive("epsilon", epsilon) / (2.0 * check_positive("gamma", gamma))


def hbar_from_learning(epsilon: float, D: float, gamma: float, lam: float) -> float:
    """(2.11) ``hbar = eps sqrt(4 D / (gamma lambda))`` (the paper's definition)."""
    return check_positive("epsilon", epsilon) * math.sqrt(
        4.0 * check_positive("D", D) / (check_positive("gamma", gamma) * check_positive("lam", lam))
    )


def hbar_from_eta_D(eta: float, D: float) -> float:
    """The documents' ``hbar = sqrt(eta D)`` (a definition)."""
    return math.sqrt(check_positive("eta", eta) * check_positive("D", D))


def hbar_from_chemical_potential(mu: float, epsilon: float) -> float:
    """(3.12) ``hbar = |mu| eps / (2 pi)`` from the multivaluedness condition (3.7),
    ``F ~ F + mu n``; the paper's result (the sign is a convention, the positive root is returned)."""
    mu = check_real("mu", mu)
    if mu == 0:
        raise ValueError("mu must be non-zero: hbar = |mu| eps / (2 pi) would vanish")
    return abs(mu) * check_positive("epsilon", epsilon) / (2.0 * math.pi)


def number_uncertainty(omega, mu, T: float, *, h: float | None = None) -> np.ndarray | float:
    """(4.5) ``Delta N = sqrt(T |d^2 Omega / d mu^2|)`` (paper's form up to the sign, see module doc).

    ``omega`` is either a callable ``Omega(mu)`` (then ``mu`` is a scalar or an array and the
    second derivative is a central difference with step ``h``, default ``1e-4 (1 + |mu|)``),
    or an array of samples ``Omega(mu_i)`` on the increasing grid ``mu`` (then the second
    derivative is ``np.gradient`` twice, second order; one value per sample is returned).
    """
    T = check_positive("T", T)
    if callable(omega):
        mu_arr = np.asarray(mu, dtype=np.float64)
        hh = 1e-4 * (1.0 + np.abs(mu_arr)) if h is None else np.full_like(mu_arr, check_positive("h", h))
        f = np.vectorize(lambda x: float(omega(x)))
        d2 = (f(mu_arr + hh) - 2.0 * f(mu_arr) + f(mu_arr - hh)) / (hh * hh)
    else:
        om = np.asarray(omega, dtype=np.float64)
        mu_arr = np.asarray(mu, dtype=np.float64)
        if om.shape != mu_arr.shape or om.ndim != 1 or om.size < 3:
            raise ValueError(
                f"with samples, omega and mu must be 1-D of equal length >= 3, got {om.shape} and {mu_arr.shape}"
            )
        if np.any(np.diff(mu_arr) <= 0):
            raise ValueError("mu samples must be strictly increasing")
        d2 = np.gradient(np.gradient(om, mu_arr, edge_order=2), mu_arr, edge_order=2)
    out = np.sqrt(T * np.abs(d2))
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class QuantumUnits:
    """``hbar`` and ``m`` of the emergent Schrodinger equation (3.5)."""

    hbar: float = 1.0
    m: float = 1.0

    def __post_init__(self):
        check_positive("hbar", self.hbar)
        check_positive("m", self.m)

    @classmethod
    def from_learning(cls, epsilon: float, gamma: float, D: float, lam: float) -> "QuantumUnits":
        """The paper's (2.10) and (2.11)."""
        return cls(hbar=hbar_from_learning(epsilon, D, gamma, lam), m=mass_from_learning(epsilon, gamma))

    @classmethod
    def from_eta_D(cls, eta: float, D: float, m: float = 1.0) -> "QuantumUnits":
        """The documents' ``hbar = sqrt(eta D)``; ``m`` is free (default 1)."""
        return cls(hbar=hbar_from_eta_D(eta, D), m=m)

    @classmethod
    def from_chemical_potential(cls, mu: float, epsilon: float, gamma: float) -> "QuantumUnits":
        """(3.12) for ``hbar`` and (2.10) for ``m``."""
        return cls(hbar=hbar_from_chemical_potential(mu, epsilon), m=mass_from_learning(epsilon, gamma))

    @property
    def kinetic_coefficient(self) -> float:
        """``hbar^2 / (2 m)``."""
        return self.hbar ** 2 / (2.0 * self.m)
