"""Input checks shared by the whole library.

Every check raises an error that names the offending value and says what is
allowed, so that bad input never turns silently into NaN further down.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np


class NonFiniteError(FloatingPointError):
    """A NaN or Inf appeared during a run.

    Attributes ``step`` and ``particle`` say where it first appeared (``None``
    when not applicable); ``quantity`` names what was non-finite.
    """

    def __init__(self, message: str, *, step: int | None = None, particle: int | None = None,
                 quantity: str | None = None):
        super().__init__(message)
        self.step = step
        self.particle = particle
        self.quantity = quantity


def check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        try:
            value = float(value)  # 0-d arrays / tensors
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{name} must be a real number, got {value!r}") from exc
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value > 0`` (e.g. ``dt``, ``eta``)."""
    v = check_real(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {name}={v!r}")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    """``value >= 0`` (e.g. the diffusion ``D``)."""
    v = check_real(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {name}={v!r}")
    return v


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return value


def check_choice(name: str, value: Any, allowed) -> Any:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def first_nonfinite(x) -> tuple[int, ...] | None:
    """Index of the first non-finite entry of a numpy array / torch tensor, or None."""
    from ._backend import is_torch

    if is_torch(x):
        import torch

        bad = ~torch.isfinite(x)
        if not bool(bad.any()):
            return None
        return tuple(int(i) for i in bad.nonzero()[0])
    arr = np.asarray(x)
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.argwhere(bad)[0])


class QuadratureWarning(UserWarning):
    """A quadrature did not resolve its integrand: two panel counts disagree beyond the tolerance (the
    value returned is the finest one computed, not exact)."""


class LeadingOrderWarning(UserWarning):
    """An asymptotic (leading-order) formula evaluated where it is not accurate, or where its value under- or
    overflows: the number is the formula's, not the exact result."""


class BoxTruncationWarning(UserWarning):
    """The box cuts off a significant part of the Gibbs density (an integral or a spectrum on the
    box then differs from the one on the whole space)."""


#: Gibbs mass fraction near the box faces above which a box is said to cut the density off
BOUNDARY_MASS_WARN = 1e-4
#: width of that boundary shell, as a fraction of the box width per axis (at least one cell)
BOUNDARY_SHELL = 0.01


def boundary_mass_fraction(axes, log_w, box=None, weights=None) -> float:
    """Fraction of ``sum weights * exp(log_w)`` over a tensor grid with coordinate ``axes`` that lies
    within ``BOUNDARY_SHELL`` of the box width of any face (at least the outermost node of every
    axis). ``box``: the faces (default: the outermost nodes); ``weights``: quadrature weights of
    the nodes (default: equal, a uniform grid)."""
    lw = np.asarray(log_w, dtype=np.float64)
    w = np.exp(lw - lw.max())
    if weights is not None:
        w = w * np.asarray(weights, dtype=np.float64).reshape(w.shape)
    shell = np.zeros(w.shape, dtype=bool)
    for k, ax in enumerate(axes):
        ax = np.asarray(ax, dtype=np.float64)
        lo, hi = (ax[0], ax[-1]) if box is None else box[k]
        width = BOUNDARY_SHELL * (hi - lo)
        near = (ax - lo <= width) | (hi - ax <= width)
        near[[0, -1]] = True
        idx = [None] * w.ndim
        idx[k] = slice(None)
        shell |= near[tuple(idx)]
    return float(w[shell].sum() / w.sum())


def check_box_truncation(axes, log_w, box, consequence: str, *, weights=None, stacklevel: int = 3) -> float:
    """The one box-truncation check: :class:`BoxTruncationWarning` when more than
    ``BOUNDARY_MASS_WARN`` of the Gibbs weight ``exp(log_w)`` (on a tensor grid with coordinate
    ``axes``, quadrature ``weights``) lies near the faces of ``box``; ``consequence`` says what the
    truncation biases. Returns the fraction. Used by the Gibbs density on a grid
    (:func:`hhld.fokker_planck.stationary.check_gibbs_box`: ``FokkerPlanck``, ``quantum.fp_map``)
    and by the log-partition function (:func:`hhld.theory.gibbs_log_partition`)."""
    import warnings

    fraction = boundary_mass_fraction(axes, log_w, box, weights)
    if fraction > BOUNDARY_MASS_WARN:
        warnings.warn(
            f"the box {[(float(a), float(b)) for a, b in box]} cuts off significant Gibbs mass: a fraction "
            f"{fraction:.3g} of exp(-mu L/D) lies within {BOUNDARY_SHELL:g} of the box width of its faces "
            f"(> {BOUNDARY_MASS_WARN:g}): {consequence}; enlarge the box",
            BoxTruncationWarning, stacklevel=stacklevel)
    return fraction
