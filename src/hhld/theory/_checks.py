"""Input checks for :mod:`hhld.theory` that also accept numpy arrays (broadcasting).

Scalars come back as Python floats, arrays as float64 ndarrays; every error names
the offending argument and value.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import to_numpy
from .._validation import check_choice, check_int, check_real


def real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False,
         finite: bool = True):
    """A real scalar or array; ``positive`` means > 0, ``nonnegative`` means >= 0."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number or array, got {value!r}")
    if np.ndim(value) == 0 and not hasattr(value, "shape"):
        v = check_real(name, value) if finite else float(value)
        if positive and not v > 0:
            raise ValueError(f"{name} must be > 0, got {name}={v!r}")
        if nonnegative and not v >= 0:
            raise ValueError(f"{name} must be >= 0, got {name}={v!r}")
        return v
    try:
        arr = np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real number or array, got {value!r}") from exc
    if arr.ndim == 0:
        return real(name, float(arr), positive=positive, nonnegative=nonnegative, finite=finite)
    if finite and not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)][0]
        raise ValueError(f"{name} must be finite, got {name} containing {bad!r}")
    if positive and not np.all(arr > 0):
        bad = arr[~(arr > 0)][0]
        raise ValueError(f"{name} must be > 0, got {name} containing {bad!r}")
    if nonnegative and not np.all(arr >= 0):
        bad = arr[~(arr >= 0)][0]
        raise ValueError(f"{name} must be >= 0, got {name} containing {bad!r}")
    return arr


def out(x):
    """Python float for 0-d results, ndarray otherwise."""
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a


def outbool(x):
    a = np.asarray(x)
    return bool(a) if a.ndim == 0 else a


def point(name: str, value: Any, dim: int | None = None) -> np.ndarray:
    """One point ``(d,)`` as float64; a scalar is accepted for ``d = 1``."""
    try:
        arr = np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a point (array of shape (d,)), got {value!r}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one point of shape (d,), got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim},) for this landscape, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {name}={arr!r}")
    return arr
