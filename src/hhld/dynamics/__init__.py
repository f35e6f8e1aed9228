"""Langevin ensembles: pure integrators, the run driver, observers, the documents' tunneling rule
(:mod:`~hhld.dynamics.kicks`: phase-transition detection and kicks; formerly ``dynamics.tunneling``),
and the entropy coupling of the Hamiltonian form.

See :mod:`hhld.dynamics.integrators` for the equations and numerical contracts (the reference
steps), :mod:`hhld.dynamics.kernels` for the fused kernels the driver uses beside them.
"""
from .driver import RunContext, Simulation, simulate
from .entropy_force import EntropyCoupling, kde_score
from .integrators import (
    INTEGRATORS,
    IntegratorInfo,
    OverdampedState,
    StepInfo,
    UnderdampedState,
    baoab,
    euler_maruyama,
    get_integrator,
    init_overdamped,
    init_underdamped,
    leimkuhler_matthews,
)
from .observers import (
    ConsolidationObserver,
    LossObserver,
    MomentsObserver,
    Observer,
    Series,
    TrajectoryObserver,
    TransitionObserver,
)
import sys as _sys

from . import kicks
from .kicks import TunnelingPolicy, kick, random_unit_directions

# the module's former name (it holds the documents' tunneling rule: detection and kicks)
tunneling = kicks
_sys.modules[__name__ + ".tunneling"] = kicks

__all__ = [
    "RunContext", "Simulation", "simulate", "EntropyCoupling", "kde_score", "INTEGRATORS", "IntegratorInfo",
    "OverdampedState", "StepInfo", "UnderdampedState", "baoab", "euler_maruyama", "get_integrator", "init_overdamped",
    "init_underdamped", "leimkuhler_matthews", "ConsolidationObserver", "LossObserver", "MomentsObserver",
    "Observer", "Series", "TrajectoryObserver", "TransitionObserver", "TunnelingPolicy", "kick",
    "random_unit_directions",
]
