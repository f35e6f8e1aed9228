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


def count_below_spacing(x: Any, size: float, factor: float = 0.2) -> tuple[int, int]:
    """``(below, nonzero)``: how many nonzero entries of ``x`` (array or tensor) have ``size`` below ``factor``
    times the spacing of ``x``'s dtype at their magnitude (``eps 2^(e-1)`` for ``|x|`` in ``[2^(e-1), 2^e)``),
    and how many nonzero entries there are.

    A random displacement of standard deviation ``size`` added to such an entry rounds back to it for nearly
    every draw when ``factor`` is 0.2 (the variance ``x + size xi`` keeps: about ``size^2`` from 0.3 spacings
    up, 31 % at 0.2, 4 % at 0.15, none below 0.1); a deterministic one of ``size`` always does when ``factor`` is
    0.5. Zero entries, where any displacement survives, are not counted."""
    if is_torch(x):
        import torch

        t = x.detach()
        t = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        _, e = torch.frexp(t)
        spacing = torch.ldexp(torch.full_like(t, float(torch.finfo(x.dtype).eps)), e - 1)
        nonzero = t != 0
        return int(((factor * spacing > size) & nonzero).sum()), int(nonzero.sum())
    a = np.asarray(x)
    if a.dtype.kind != "f":
        return 0, int(np.count_nonzero(a))
    _, e = np.frexp(a.astype(np.float64) if a.dtype == np.float16 else a)
    spacing = np.ldexp(np.finfo(a.dtype).eps, e - 1)
    nonzero = a != 0
    return int(((factor * spacing > size) & nonzero).sum()), int(nonzero.sum())
