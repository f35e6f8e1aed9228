"""Uniform cell-centred grids on boxes in 1-3 dimensions.

A :class:`Grid` holds ``n_k`` cells of width ``dx_k = (hi_k - lo_k) / n_k`` on each axis,
with nodes at the cell centres ``x_i = lo + (i + 1/2) dx``. The same grid serves

* the split-step Fourier solver (the box is then read as one period of a periodic domain),
* the sparse finite-difference Hamiltonians (Dirichlet walls half a cell outside the box),
* the finite-volume Fokker-Planck generator (no-flux walls on the box faces).

Wave functions are arrays of shape ``grid.shape`` normalised so that
``sum |psi|^2 dV = 1`` (``dV = prod dx_k``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._validation import check_int, check_positive

__all__ = ["Grid", "make_grid"]


@dataclass(frozen=True)
class Grid:
    """A uniform cell-centred grid. ``shape``: cells per axis; ``box``: ``[(lo, hi)] * d``."""

    shape: tuple[int, ...]
    box: tuple[tuple[float, float], ...]

    def __post_init__(self):
        shape = tuple(check_int(f"shape[{k}]", n, minimum=4) for k, n in enumerate(self.shape))
        box = tuple((float(lo), float(hi)) for lo, hi in self.box)
        if not 1 <= len(shape) <= 3:
            raise ValueError(f"grids have 1, 2 or 3 dimensions, got shape={shape}")
        if len(box) != len(shape):
            raise ValueError(f"box must have {len(shape)} (lo, hi) pairs, got {len(box)}")
        for k, (n, (lo, hi)) in enumerate(zip(shape, box)):
            if n < 4:
                raise ValueError(f"axis {k}: need at least 4 grid points, got {n}")
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(f"axis {k}: box must satisfy lo < hi (finite), got ({lo}, {hi})")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "box", box)

    # -------------------------------------------------------------- geometry
    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dx(self) -> np.ndarray:
        """Cell widths per axis, shape ``(d,)``."""
        return np.array([(hi - lo) / n for n, (lo, hi) in zip(self.shape, self.box)])

    @property
    def dV(self) -> float:
        return float(np.prod(self.dx))

    @property
    def lengths(self) -> np.ndarray:
        return np.array([hi - lo for lo, hi in self.box])

    def axes(self) -> list[np.ndarray]:
        """Cell-centre coordinates per axis."""
        return [lo + (np.arange(n) + 0.5) * (hi - lo) / n for n, (lo, hi) in zip(self.shape, self.box)]

    def mesh(self) -> list[np.ndarray]:
        """``np.meshgrid(*axes, indexing="ij")``: one array of ``grid.shape`` per axis."""
        return np.meshgrid(*self.axes(), indexing="ij")

    def points(self) -> np.ndarray:
        """All nodes as a batch ``(size, d)`` (C order), as landscapes take them."""
        return np.stack([m.ravel() for m in self.mesh()], axis=-1)

    def wavenumbers(self) -> list[np.ndarray]:
        """Angular wave numbers ``k`` per axis (FFT order)."""
        return [2.0 * np.pi * np.fft.fftfreq(n, d=dx) for n, dx in zip(self.shape, self.dx)]

    def k_mesh(self) -> list[np.ndarray]:
        return np.meshgrid(*self.wavenumbers(), indexing="ij")

    def k_squared(self) -> np.ndarray:
        return sum(k * k for k in self.k_mesh())

    # ------------------------------------------------------------ functions
    def evaluate(self, landscape) -> np.ndarray:
        """A landscape's value on every node, shape ``grid.shape`` (float64)."""
        if getattr(landscape, "dim", self.dim) != self.dim:
            raise ValueError(f"landscape has dim={landscape.dim}, grid has dim={self.dim}")
        v = np.asarray(landscape.value(self.points()), dtype=np.float64).reshape(self.shape)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"landscape {getattr(landscape, 'name', landscape)!r} has non-finite values on the grid")
        return v

    def evaluate_grad(self, landscape) -> np.ndarray:
        """The gradient on every node, shape ``(d, *grid.shape)``."""
        g = np.asarray(landscape.grad(self.points()), dtype=np.float64)
        return np.moveaxis(g.reshape(*self.shape, self.dim), -1, 0)

    def evaluate_laplacian(self, landscape) -> np.ndarray:
        return np.asarray(landscape.laplacian(self.points()), dtype=np.float64).reshape(self.shape)

    def integrate(self, f) -> float | complex:
        return np.sum(f) * self.dV

    def norm(self, psi) -> float:
        """``sqrt(sum |psi|^2 dV)``."""
        return float(np.sqrt(np.sum(np.abs(psi) ** 2) * self.dV))

    def normalize(self, psi):
        """``psi / norm(psi)``; raises for a state that is zero or non-finite on the grid."""
        n = self.norm(psi)
        if not (np.isfinite(n) and n > 0):
            raise ValueError(f"cannot normalise a wave function of norm {n!r} on the grid {list(self.box)}"
                             + (" (it has non-finite values)" if not np.isfinite(n) else
                                " (it is zero everywhere on the grid)"))
        return psi / n

    def inner(self, phi, psi) -> complex:
        """``<phi|psi> = sum conj(phi) psi dV``."""
        return complex(np.vdot(phi, psi) * self.dV)

    def expectation(self, f, psi) -> float:
        """``<psi| f(x) |psi>`` for a function sampled on the grid."""
        return float(np.sum(f * np.abs(psi) ** 2) * self.dV / (self.norm(psi) ** 2))

    def gaussian_packet(self, center, width, momentum=None, hbar: float = 1.0, dtype=np.complex128):
        """A normalised Gaussian ``exp(-|x-c|^2/(4 w^2) + i p.x/hbar)``: ``width`` is the
        position standard deviation ``Delta x`` per axis, ``momentum`` the mean momentum."""
        c = _vector("center", center, self.dim)
        w = _vector("width", width, self.dim)
        p = np.zeros(self.dim) if momentum is None else _vector("momentum", momentum, self.dim)
        hbar = check_positive("hbar", hbar)
        if np.any(w <= 0):
            raise ValueError(f"width must be > 0, got {width!r}")
        lo, hi = np.array([b[0] for b in self.box]), np.array([b[1] for b in self.box])
        if np.any(c < lo) or np.any(c > hi):
            raise ValueError(f"the packet's center={c.tolist()} lies outside the grid box "
                             f"{[list(b) for b in self.box]}; put it inside the box")
        expo = np.zeros(self.shape, dtype=np.complex128)
        for xk, ck, wk, pk in zip(self.mesh(), c, w, p):
            expo += -((xk - ck) ** 2) / (4.0 * wk * wk) + 1j * pk * xk / hbar
        # shift the real part so that the largest entry is exp(0): no underflow to an all-zero state
        top = float(expo.real.max())
        if top < -700.0:  # narrower than the node spacing: no node carries any weight
            raise ValueError(
                f"the Gaussian packet at center={c.tolist()} with width={w.tolist()} is far narrower than the grid "
                f"spacing {self.dx.tolist()}: its density is below exp(-1400) at every node; widen the packet or "
                f"use more points")
        psi = np.exp(expo - top).astype(dtype)
        return self.normalize(psi)


def _vector(name: str, value, dim: int) -> np.ndarray:
    """A finite float vector of ``dim`` entries (a scalar is repeated)."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number or {dim} numbers, got {value!r}") from exc
    if v.ndim > 1 or (v.ndim == 1 and v.size not in (1, dim)):
        raise ValueError(f"{name} must be a number or {dim} numbers, got {value!r}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return np.broadcast_to(v.reshape(-1) if v.ndim else v, (dim,)).copy()


def make_grid(n: int | Sequence[int], box: Sequence[tuple[float, float]]) -> Grid:
    """``Grid`` with ``n`` points per axis (an int for all axes, or one int per axis)."""
    box = [tuple(b) for b in box]
    if isinstance(n, (int, np.integer)) or np.ndim(n) == 0:
        shape = (check_int("n", n, minimum=4),) * len(box)
    else:
        shape = tuple(check_int(f"n[{k}]", v, minimum=4) for k, v in enumerate(n))
    if len(shape) != len(box):
        raise ValueError(f"n has {len(shape)} entries but box has {len(box)} axes")
    return Grid(shape, tuple(box))
