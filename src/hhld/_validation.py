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
