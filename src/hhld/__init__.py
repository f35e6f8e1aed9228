"""hhld: Heisenberg Harmonic Learning Dynamics.

Simulate training as Langevin / Fokker-Planck dynamics (and its Schrodinger
reading) on loss landscapes, watch real PyTorch training with the HHLD
observables, and re-measure every claim of the HHLD documents.
"""
from __future__ import annotations

__version__ = "0.1.0"

import importlib

from ._validation import NonFiniteError

# Everything else is imported on first use (PEP 562), so that `hhld --help` and the command
# line's one-line errors do not wait for scipy and torch (seconds on a busy machine).
_LAZY = {
    "torch_generator": "._backend",
    "Simulation": ".dynamics", "simulate": ".dynamics",
    "Landscape": ".landscapes", "NumpyLandscape": ".landscapes", "TorchLandscape": ".landscapes",
    "get_landscape": ".landscapes",
    "get_consolidation_metrics": ".observables",
    "HeisenbergLearning": ".documents_api",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

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
