"""The master equation ``d rho/dt = mu div(rho grad L) + D lap rho`` on grids in 1-3 D.

* :class:`FokkerPlanck` -- the entry point (stationary state, evolution, spectrum,
  functionals) for any :mod:`hhld.landscapes` landscape.
* :mod:`.grid` (cells), :mod:`.operator` (Scharfetter-Gummel generator and the reference
  right-hand side), :mod:`.evolve`, :mod:`.stationary`, :mod:`.spectrum`,
  :mod:`.functionals`, :mod:`.compare` (Langevin ensembles vs grid densities),
  :mod:`.mfpt` (exact mean first-passage times, committors, rates between sets),
  :mod:`.averages` (``E[f]``, ``Var[f]``, ``Cov[f, g]`` on the grid).

Theory and the stated-vs-exact forms: ``docs/theory/master_equation.md``.
"""
from __future__ import annotations

from .compare import EnsembleComparison, compare_ensemble, histogram_density
from .evolve import ContourPropagator, CRAMPropagator, RationalPropagator, chebyshev_expmv, evolve_generator
from .functionals import (EntropyProduction, entropy_production, fisher_information, free_energy,
                          kl_divergence, shannon_entropy)
from .grid import Grid
from .mfpt import TransitionRate, committor, mean_first_passage_time, transition_rate
from .operator import bernoulli, build_generator, build_symmetric, reference_rhs
from .solver import BoxTruncationWarning, FokkerPlanck, GridResolutionWarning
from .spectrum import Spectrum, SpectrumResolutionWarning, low_spectrum
from .stationary import flux_residual, gibbs_density, log_gibbs_density, stationary_solve

__all__ = [
    "FokkerPlanck", "Grid", "GridResolutionWarning", "BoxTruncationWarning",
    "build_generator", "build_symmetric", "reference_rhs", "bernoulli",
    "evolve_generator", "chebyshev_expmv", "ContourPropagator", "CRAMPropagator", "RationalPropagator",
    "gibbs_density", "log_gibbs_density", "stationary_solve", "flux_residual",
    "Spectrum", "SpectrumResolutionWarning", "low_spectrum", "kl_divergence", "shannon_entropy", "free_energy",
    "fisher_information", "entropy_production", "EntropyProduction",
    "compare_ensemble", "histogram_density", "EnsembleComparison",
    "mean_first_passage_time", "committor", "transition_rate", "TransitionRate",
]
