"""Uniform cell-centred grids on boxes in 1-3 dimensions: one grid for the Fokker-Planck solvers
(:mod:`hhld.fokker_planck`) and the quantum ones (:mod:`hhld.quantum`).

A :class:`Grid` splits the box ``[lo_1, hi_1] x ... x [lo_d, hi_d]`` into ``shape[k]`` equal
cells along axis ``k`` (width ``h[k] = (hi_k - lo_k) / shape[k]``, also called ``dx``). Values
live on the cell centres ``x_i = lo + (i + 1/2) h``, stored as arrays of shape ``grid.shape`` in
C order; the flat index used by the sparse operators is ``numpy.ravel_multi_index`` of it.
Integrals are midpoint sums ``sum(f) * cell_volume`` (``cell_volume`` is also called ``dV``).

The same grid serves

* the finite-volume Fokker-Planck generator (no-flux walls on the box faces), whose densities
  are normalised with :meth:`Grid.normalize_density` (``sum rho dV = 1``);
* the split-step Fourier solver (the box is then one period of a periodic domain) and the sparse
  finite-difference Hamiltonians, whose wave functions are normalised with
  :meth:`Grid.normalize_wave` (``sum |psi|^2 dV = 1``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._validation import check_int, check_positive, check_real

__all__ = ["Grid", "make_grid"]


def _physical_memory() -> float:
    """Bytes of physical memory (inf where the platform does not say)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return float("inf")


def _available_memory() -> float:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux, else the physical
    memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return _physical_memory()


class _Axes(list):
    """The cell-centre coordinates per axis (a list of arrays). Calling it returns itself, so
    ``grid.axes`` and ``grid.axes()`` (the quantum grid's former method) both work."""

    def __call__(self):
        return self


@dataclass(frozen=True)
class Grid:
    """A box split into equal cells; values at the cell centres.

    Parameters
    ----------
    shape : tuple of int
        Cells per axis (at least 2; 1 to 3 axes). ``cells`` is the same tuple.
    box : sequence of (lo, hi)
        One finite pair with ``lo < hi`` per axis.
    dtype : numpy floating dtype
        Of the coordinates (float64 by default).
    """

    shape: tuple
    box: tuple
    dtype: np.dtype = np.dtype(np.float64)

    def __post_init__(self):
        box = [tuple(b) if np.ndim(b) == 1 else b for b in self.box]
        if not 1 <= len(box) <= 3:
            raise ValueError(f"grids have 1 to 3 dimensions, got a box with {len(box)} axes")
        pairs = []
        for k, b in enumerate(box):
            if not isinstance(b, tuple) or len(b) != 2:
                raise ValueError(f"box[{k}] must be a (lo, hi) pair, got {b!r}")
            lo, hi = check_real(f"box[{k}][0]", b[0]), check_real(f"box[{k}][1]", b[1])
            if not hi > lo:
                raise ValueError(f"box must have lo < hi on every axis, got box[{k}] = ({lo}, {hi})")
            pairs.append((float(lo), float(hi)))
        shape = self.shape
        if np.ndim(shape) == 0:  # one value for every axis
            shape = (shape,) * len(pairs)
        shape = tuple(check_int(f"shape[{k}]", n, minimum=2) for k, n in enumerate(shape))
        if len(shape) != len(pairs):
            raise ValueError(f"shape must have {len(pairs)} entries (one per axis of the box), got {shape}")
        dtype = np.dtype(self.dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        one_array = float(np.prod([float(n) for n in shape])) * 8
        if one_array > _physical_memory():
            raise ValueError(f"a grid of shape {shape} is too large: one float64 array of its values needs "
                             f"{one_array / 2 ** 30:.3g} GiB, more than this machine's memory "
                             f"({_physical_memory() / 2 ** 30:.3g} GiB); use fewer cells")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "box", tuple(pairs))
        object.__setattr__(self, "dtype", dtype)

    @classmethod
    def from_box(cls, box: Sequence[tuple[float, float]], cells, dtype=np.float64) -> "Grid":
        """``box``: ``[(lo, hi), ...]`` (one pair per dimension); ``cells``: an int (same on
        every axis) or one int per axis."""
        box = tuple(tuple(b) if np.ndim(b) == 1 else b for b in box)
        if np.ndim(cells) == 0:
            cells = (cells,) * len(box)
        cells = tuple(check_int(f"cells[{k}]", c, minimum=2) for k, c in enumerate(cells))
        if len(cells) != len(box):
            raise ValueError(f"cells must be an int or have {len(box)} entries (one per axis), got {cells}")
        return cls(cells, box, dtype)

    # ---------------------------------------------------------------- geometry
    @property
    def cells(self) -> tuple:
        return self.shape

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def lo(self) -> np.ndarray:
        return np.array([b[0] for b in self.box])

    @property
    def hi(self) -> np.ndarray:
        return np.array([b[1] for b in self.box])

    @property
    def lengths(self) -> np.ndarray:
        return self.hi - self.lo

    @property
    def h(self) -> np.ndarray:
        """Cell widths per axis, shape ``(d,)`` (``dx`` is the same)."""
        return self.lengths / np.asarray(self.shape)

    dx = h

    @property
    def cell_volume(self) -> float:
        """``prod h`` (``dV`` is the same)."""
        return float(np.prod(self.h))

    dV = cell_volume

    @property
    def axes(self) -> _Axes:
        """Cell-centre coordinates along each axis."""
        return _Axes((lo + (np.arange(n) + 0.5) * (hi - lo) / n).astype(self.dtype)
                     for n, (lo, hi) in zip(self.shape, self.box))

    @property
    def edges(self) -> list[np.ndarray]:
        """Cell-face coordinates along each axis (``shape[k] + 1`` values)."""
        return [np.linspace(lo, hi, n + 1).astype(self.dtype) for n, (lo, hi) in zip(self.shape, self.box)]

    def mesh(self) -> list[np.ndarray]:
        """``numpy.meshgrid(*axes, indexing='ij')``: one array of ``grid.shape`` per axis."""
        return np.meshgrid(*self.axes, indexing="ij")

    def points(self) -> np.ndarray:
        """All cell centres as a batch ``(size, d)`` in flat (C) order, as landscapes take them."""
        return np.stack([m.ravel() for m in self.mesh()], axis=-1)

    def boundary_mask(self) -> np.ndarray:
        """True on the outermost layer of cells (any face on the box boundary)."""
        mask = np.zeros(self.shape, dtype=bool)
        for k in range(self.dim):
            idx = [slice(None)] * self.dim
            idx[k] = 0
            mask[tuple(idx)] = True
            idx[k] = -1
            mask[tuple(idx)] = True
        return mask

    def wavenumbers(self) -> list[np.ndarray]:
        """Angular wave numbers ``k`` per axis (FFT order), the box read as one period."""
        return [2.0 * np.pi * np.fft.fftfreq(n, d=dx) for n, dx in zip(self.shape, self.h)]

    def k_mesh(self) -> list[np.ndarray]:
        return np.meshgrid(*self.wavenumbers(), indexing="ij")

    def k_squared(self) -> np.ndarray:
        return sum(k * k for k in self.k_mesh())

    # ---------------------------------------------------------------- functions
    def evaluate(self, landscape) -> np.ndarray:
        """A landscape's value on every cell centre, shape ``grid.shape`` (float64)."""
        if getattr(landscape, "dim", self.dim) != self.dim:
            raise ValueError(f"landscape has dim={landscape.dim}, grid has dim={self.dim}")
        v = np.asarray(landscape.value(self.points()), dtype=np.float64).reshape(self.shape)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"landscape {getattr(landscape, 'name', landscape)!r} has non-finite values on the grid")
        return v

    def evaluate_grad(self, landscape) -> np.ndarray:
        """The gradient on every cell centre, shape ``(d, *grid.shape)``."""
        g = np.asarray(landscape.grad(self.points()), dtype=np.float64)
        return np.moveaxis(g.reshape(*self.shape, self.dim), -1, 0)

    def evaluate_laplacian(self, landscape) -> np.ndarray:
        return np.asarray(landscape.laplacian(self.points()), dtype=np.float64).reshape(self.shape)

    def integrate(self, f):
        """Midpoint rule ``sum(f) * cell_volume`` over the whole box (accumulated in float64 /
        complex128; a float for real ``f``, a complex for complex ``f``)."""
        if np.iscomplexobj(f):
            return complex(np.sum(f, dtype=np.complex128) * self.cell_volume)
        return float(np.sum(f, dtype=np.float64) * self.cell_volume)

    def normalize_density(self, rho: np.ndarray) -> np.ndarray:
        """``rho / integrate(rho)``: a probability density on the grid (``sum rho dV = 1``)."""
        m = self.integrate(rho)
        if not np.isfinite(m) or m <= 0:
            raise ValueError(f"cannot normalise a density with total mass {m!r}")
        return rho / m

    # ----------------------------------------------------------- wave functions
    def norm(self, psi) -> float:
        """``sqrt(sum |psi|^2 dV)``."""
        return float(np.sqrt(np.sum(np.abs(psi) ** 2) * self.dV))

    def normalize_wave(self, psi):
        """``psi / norm(psi)`` (``sum |psi|^2 dV = 1``); raises for a state that is zero or
        non-finite on the grid."""
        n = self.norm(psi)
        if not (np.isfinite(n) and n > 0):
            raise ValueError(f"cannot normalise a wave function of norm {n!r} on the grid {list(self.box)}"
                             + (" (it has non-finite values)" if not np.isfinite(n) else
                                " (it is zero everywhere on the grid)"))
        return psi / n

    def inner(self, phi, psi) -> complex:
        """``<phi|psi> = sum conj(phi) psi dV``."""
        if np.size(phi) != self.size or np.size(psi) != self.size:
            raise ValueError(f"phi and psi must have {self.size} values (grid shape {self.shape}), got shapes "
                             f"{np.shape(phi)} and {np.shape(psi)}")
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
        if np.any(c < self.lo) or np.any(c > self.hi):
            raise ValueError(f"the packet's center={c.tolist()} lies outside the grid box "
                             f"{[list(b) for b in self.box]}; put it inside the box")
        for k, (ck, wk, (lo, hi)) in enumerate(zip(c, w, self.box)):
            inside = 0.5 * (math.erf((hi - ck) / (math.sqrt(2.0) * wk)) - math.erf((lo - ck) / (math.sqrt(2.0) * wk)))
            if inside < 0.5:
                raise ValueError(f"the packet's width={w.tolist()} is too wide for the grid box "
                                 f"{[list(b) for b in self.box]}: only {inside:.1%} of |psi|^2 lies inside it on "
                                 f"axis {k} (the rest would be cut off and the state renormalised); narrow the "
                                 "packet or widen the box")
        k_max = np.pi / self.dx
        if np.any(np.abs(p) / hbar > k_max):
            raise ValueError(f"the packet's momentum={p.tolist()} is beyond what the grid resolves: |p|/hbar must be "
                             f"<= pi/dx = {k_max.tolist()} (it would alias to another momentum); use more points "
                             "or a smaller momentum")
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
        return self.normalize_wave(psi)

    def __repr__(self) -> str:
        return f"Grid(box={list(self.box)}, shape={self.shape})"


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
    """A :class:`Grid` with ``n`` points per axis (an int for all axes, or one int per axis; at
    least 4, as the spectral and finite-difference quantum solvers need)."""
    if isinstance(box, (str, bytes)) or not hasattr(box, "__iter__"):
        raise TypeError(f"box must be a sequence of (lo, hi) pairs, one per axis, got {box!r}")
    box = [tuple(b) for b in box]
    if isinstance(n, (int, np.integer)) or np.ndim(n) == 0:
        shape = (check_int("n", n, minimum=4),) * len(box)
    else:
        shape = tuple(check_int(f"n[{k}]", v, minimum=4) for k, v in enumerate(n))
    if len(shape) != len(box):
        raise ValueError(f"n has {len(shape)} entries but box has {len(box)} axes")
    return Grid(shape, tuple(box))
