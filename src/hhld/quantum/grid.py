"""The grid of the quantum solvers: :class:`hhld.grid.Grid` and :func:`hhld.grid.make_grid`, shared
with :mod:`hhld.fokker_planck` (this module keeps the import path ``hhld.quantum.grid``)."""
from ..grid import Grid, make_grid

__all__ = ["Grid", "make_grid"]
