"""The grid of the Fokker-Planck solvers: :class:`hhld.grid.Grid`, shared with :mod:`hhld.quantum`
(this module keeps the import path ``hhld.fokker_planck.grid``)."""
from ..grid import Grid

__all__ = ["Grid"]
