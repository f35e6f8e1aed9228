"""hhld: Heisenberg Harmonic Learning Dynamics.

Simulate training as Langevin / Fokker-Planck dynamics (and its Schrodinger
reading) on loss landscapes, watch real PyTorch training with the HHLD
observables, and re-measure every claim of the HHLD documents.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import dynamics, landscapes, observables
from ._backend import torch_generator
from ._validation import NonFiniteError
from .dynamics import Simulation, simulate
from .landscapes import Landscape, NumpyLandscape, TorchLandscape, get_landscape
from .observables import get_consolidation_metrics
from .documents_api import HeisenbergLearning

__all__ = [
    "__version__",
    "dynamics",
    "landscapes",
    "observables",
    "Landscape",
    "NumpyLandscape",
    "TorchLandscape",
    "get_landscape",
    "Simulation",
    "simulate",
    "HeisenbergLearning",
    "get_consolidation_metrics",
    "torch_generator",
    "NonFiniteError",
]
