"""hhld.torch: monitoring and steering real PyTorch training.

Each engineer adds only their own names below.
"""
from __future__ import annotations

# --- monitor / noise / hessian (issue 4, monitor part)
from .hessian import EigenEstimate, TraceEstimate, hutchinson_trace, make_hvp, top_eigenvalue
from .noise import NoiseStats, gradient_noise_stats
from .distributed import DistributedNoiseEstimate, DistributedNoiseStats, register_noise_hook
from .persample import BatchAxisError, PerSampleSqNorms
from .monitor import Monitor
from .quantities import (Curvature, GradientStats, IntervalContext, NoiseScale, Quantity, StepContext,
                         UncertaintyWindow)
from .callbacks import hf_callback, lightning_callback
from .plotting import plot_monitor

# --- HeisenbergSGD / neurogenesis / lr (issue 4, optimizer part)
from .optim import ControllerConfig, HeisenbergSGD, heisenberg_sgd
from .neurogenesis import (GrandCanonicalScheduler, LinearPair, NeuronMove, add_neurons, candidate_scores,
                           find_linear_pairs, neurodegeneration, neurogenesis, removal_scores, remove_neurons)
from .lr import EtaOptPrediction, LRRangeResult, eta_opt_prediction, lr_range_test

__all__ = [
    "EigenEstimate",
    "TraceEstimate",
    "hutchinson_trace",
    "make_hvp",
    "top_eigenvalue",
    "NoiseStats",
    "gradient_noise_stats",
    "DistributedNoiseStats",
    "DistributedNoiseEstimate",
    "register_noise_hook",
    "PerSampleSqNorms",
    "BatchAxisError",
    "Monitor",
    "Quantity",
    "StepContext",
    "IntervalContext",
    "lightning_callback",
    "hf_callback",
    "plot_monitor",
    "GradientStats",
    "UncertaintyWindow",
    "NoiseScale",
    "Curvature",
    # optimizer part
    "ControllerConfig",
    "HeisenbergSGD",
    "heisenberg_sgd",
    "GrandCanonicalScheduler",
    "LinearPair",
    "NeuronMove",
    "add_neurons",
    "candidate_scores",
    "find_linear_pairs",
    "neurodegeneration",
    "neurogenesis",
    "removal_scores",
    "remove_neurons",
    "EtaOptPrediction",
    "LRRangeResult",
    "eta_opt_prediction",
    "lr_range_test",
]
