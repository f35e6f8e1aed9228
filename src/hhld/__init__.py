"""hhld: Heisenberg Harmonic Learning Dynamics.

Simulate training as Langevin / Fokker-Planck dynamics (and its Schrodinger
reading) on loss landscapes, watch real PyTorch training with the HHLD
observables, and re-measure every claim of the HHLD documents.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import landscapes
from ._backend import torch_generator
from ._validation import NonFiniteError
from .landscapes import Landscape, NumpyLandscape, TorchLandscape, get_landscape

__all__ = [
    "__version__",
    "landscapes",
    "Landscape",
    "NumpyLandscape",
    "TorchLandscape",
    "get_landscape",
    "torch_generator",
    "NonFiniteError",
]
