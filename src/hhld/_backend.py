"""Tiny array-backend helpers: the same code path for numpy arrays and torch tensors.

numpy is the reference backend; torch is the fast backend for ensembles.
Functions here never change a dtype they are given.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch")


def namespace(x: Any):
    """The module (``numpy`` or ``torch``) that owns ``x``."""
    if is_torch(x):
        import torch

        return torch
    return np


def to_numpy(x: Any) -> np.ndarray:
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def like(value: Any, ref: Any):
    """Convert ``value`` to the backend, dtype and device of ``ref``."""
    if is_torch(ref):
        import torch

        return torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    return np.asarray(value, dtype=np.asarray(ref).dtype)


def default_rng(rng=None, *, seed: int | None = None):
    """``rng=None`` means a fresh ``np.random.default_rng(seed)`` (as py-pde does).

    A numpy ``Generator`` or a ``torch.Generator`` passes through unchanged; an
    int is taken as a numpy seed.
    """
    if rng is None:
        return np.random.default_rng(_seed("seed", seed))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(_seed("rng", rng)))
    return rng


def _seed(name: str, s):
    """A numpy seed: None, an integer >= 0, or what numpy takes besides (a SeedSequence, a sequence)."""
    if isinstance(s, (bool, float, np.floating)):
        raise TypeError(f"{name} must be an integer seed >= 0, got {s!r}")
    if isinstance(s, (int, np.integer)) and s < 0:
        raise ValueError(f"{name} must be an integer seed >= 0, got {name}={s}")
    return s


def standard_normal(rng, shape, like_x):
    """Standard normal numbers with the backend/dtype/device of ``like_x``.

    For numpy, ``rng`` is a ``numpy.random.Generator`` or any object with the same
    ``standard_normal(shape, dtype=...)`` method (tests use scripted noise this way).
    """
    if is_torch(like_x):
        import torch

        if not isinstance(rng, torch.Generator):
            raise TypeError(
                "torch arrays need a torch.Generator as rng (got "
                f"{type(rng).__name__}); use hhld.torch_generator(seed, device)"
            )
        return torch.randn(shape, generator=rng, dtype=like_x.dtype, device=like_x.device)
    if not hasattr(rng, "standard_normal"):
        raise TypeError(
            f"numpy arrays need a numpy Generator as rng (got {type(rng).__name__}); "
            "use np.random.default_rng(seed)"
        )
    dtype = np.asarray(like_x).dtype
    if dtype == np.float32:
        return rng.standard_normal(shape, dtype=np.float32)
    return rng.standard_normal(shape).astype(dtype, copy=False)


def torch_generator(seed: int | None = None, device: str | None = None):
    """A seeded ``torch.Generator`` (seed ``None``: non-deterministic)."""
    import torch

    g = torch.Generator(device=device or "cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g
