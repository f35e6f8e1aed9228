"""The quantum side of the paper (Katsnelson & Vanchurin) and the documents.

One concept per module:

* :mod:`~hhld.quantum.grid` -- uniform cell-centred grids in 1-3 D;
* :mod:`~hhld.quantum.units` -- ``hbar`` and ``m`` from learning parameters (2.10, 2.11, 3.12,
  the documents' ``sqrt(eta D)``), ``Delta N`` (4.5);
* :mod:`~hhld.quantum.schrodinger` -- split-step Fourier evolution (3.5), imaginary time;
* :mod:`~hhld.quantum.eigen` -- low eigenpairs of ``-(hbar^2/2m) lap + V``;
* :mod:`~hhld.quantum.fp_map` -- the exact Fokker-Planck <-> Schrodinger map;
* :mod:`~hhld.quantum.harmonic` -- oscillator levels, coherent states, ladder operators;
* :mod:`~hhld.quantum.double_well` -- double-well splitting and tunneling oscillation (formerly
  ``quantum.tunneling``, still importable under that name);
* :mod:`~hhld.quantum.madelung` -- (3.2)-(3.4), (3.6): Madelung variables and residuals;
* :mod:`~hhld.quantum.vector_potential` -- (4.11)-(4.13), gauge-covariant lattice form;
* :mod:`~hhld.quantum.measurement` -- section 5 (5.1)-(5.16) in a finite position basis.
"""
from __future__ import annotations

import sys as _sys

from . import double_well, eigen, fp_map, grid, harmonic, madelung, measurement, schrodinger, units, vector_potential

# the module's former name
tunneling = double_well
_sys.modules[__name__ + ".tunneling"] = double_well
from .eigen import eigenstates, hamiltonian_matrix, laplacian_matrix
from .grid import Grid, make_grid
from .schrodinger import SplitStepSolver, imaginary_time_ground_state, potential_on_grid
from .units import QuantumUnits

__all__ = [
    "double_well", "eigen", "fp_map", "grid", "harmonic", "madelung", "measurement", "schrodinger", "tunneling",
    "units",
    "vector_potential",
    "Grid", "make_grid", "SplitStepSolver", "imaginary_time_ground_state", "potential_on_grid",
    "eigenstates", "hamiltonian_matrix", "laplacian_matrix", "QuantumUnits",
]
