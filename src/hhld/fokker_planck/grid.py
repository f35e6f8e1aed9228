"""Cell-centred tensor grids on boxes in 1-3 dimensions.

A :class:`Grid` splits the box ``[lo_1, hi_1] x ... x [lo_d, hi_d]`` into
``cells[k]`` equal cells along axis ``k`` (width ``h[k] = (hi_k - lo_k)/cells[k]``).
Densities live on cell centres, stored as arrays of shape ``grid.shape`` in C order;
the flat index used by the sparse operators is ``numpy.ravel_multi_index`` of it.
Integrals are midpoint sums ``sum(f) * grid.cell_volume``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._validation import check_int, check_real

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """A box split into equal cells; values at cell centres.

    Attributes: ``lo``, ``hi`` (box corners, shape ``(d,)``), ``cells`` (tuple of ints),
    ``h`` (cell widths), ``axes`` (centre coordinates per axis), ``dtype``.
    """

    lo: np.ndarray
    hi: np.ndarray
    cells: tuple
    dtype: np.dtype = np.dtype(np.float64)

    @classmethod
    def from_box(cls, box: Sequence[tuple[float, float]], cells, dtype=np.float64) -> "Grid":
        """``box``: ``[(lo, hi), ...]`` (one pair per dimension); ``cells``: an int (same
        on every axis) or one int per axis."""
        box = [tuple(b) for b in box]
        d = len(box)
        if not 1 <= d <= 3:
            raise ValueError(f"the Fokker-Planck grid supports 1 to 3 dimensions, got a box with {d}")
        for k, b in enumerate(box):
            if len(b) != 2:
                raise ValueError(f"box[{k}] must be a (lo, hi) pair, got {b!r}")
        lo = np.array([check_real(f"box[{k}][0]", b[0]) for k, b in enumerate(box)])
        hi = np.array([check_real(f"box[{k}][1]", b[1]) for k, b in enumerate(box)])
        if np.any(hi <= lo):
            raise ValueError(f"box must have lo < hi on every axis, got box={box}")
        if np.ndim(cells) == 0:  # one value for every axis (checked to be an int below)
            cells = (cells,) * d
        cells = tuple(check_int(f"cells[{k}]", c, minimum=2) for k, c in enumerate(cells))
        if len(cells) != d:
            raise ValueError(f"cells must be an int or have {d} entries (one per axis), got {cells}")
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        return cls(lo=lo, hi=hi, cells=cells, dtype=dtype)

    # ---------------------------------------------------------------- geometry
    @property
    def dim(self) -> int:
        return len(self.cells)

    @property
    def shape(self) -> tuple:
        return self.cells

    @property
    def size(self) -> int:
        return int(np.prod(self.cells))

    @property
    def h(self) -> np.ndarray:
        return (self.hi - self.lo) / np.asarray(self.cells)

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.h))

    @property
    def box(self) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in zip(self.lo, self.hi)]

    @property
    def axes(self) -> list[np.ndarray]:
        """Cell-centre coordinates along each axis."""
        return [(self.lo[k] + (np.arange(n) + 0.5) * self.h[k]).astype(self.dtype)
                for k, n in enumerate(self.cells)]

    @property
    def edges(self) -> list[np.ndarray]:
        """Cell-face coordinates along each axis (``cells[k] + 1`` values)."""
        return [np.linspace(self.lo[k], self.hi[k], n + 1).astype(self.dtype)
                for k, n in enumerate(self.cells)]

    def mesh(self) -> list[np.ndarray]:
        """``numpy.meshgrid(*axes, indexing='ij')``."""
        return np.meshgrid(*self.axes, indexing="ij")

    def points(self) -> np.ndarray:
        """All cell centres as a batch ``(size, d)`` in flat (C) order."""
        return np.stack([m.ravel() for m in self.mesh()], axis=-1)

    # ---------------------------------------------------------------- integrals
    def integrate(self, f: np.ndarray) -> float:
        """Midpoint rule ``sum(f) * cell_volume`` over the whole box."""
        return float(np.sum(f, dtype=np.float64) * self.cell_volume)

    def normalize(self, rho: np.ndarray) -> np.ndarray:
        """``rho / integrate(rho)`` (a probability density on the grid)."""
        m = self.integrate(rho)
        if not np.isfinite(m) or m <= 0:
            raise ValueError(f"cannot normalise a density with total mass {m!r}")
        return rho / m

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

    def __repr__(self) -> str:
        return f"Grid(box={self.box}, cells={self.cells})"
