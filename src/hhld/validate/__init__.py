"""``hhld validate``: experiments that re-measure every claim of the HHLD documents.

See :mod:`hhld.validate.base` for the experiment interface, :mod:`hhld.validate.runner`
for running (cache, resume, executors) and :mod:`hhld.validate.report` for the report.
"""
from __future__ import annotations

from .base import (REGISTRY, VERDICTS, Cell, Experiment, ExperimentConfig, ExperimentReport,
                   Row, claim, get_experiment, register)

__all__ = ["REGISTRY", "VERDICTS", "Cell", "Experiment", "ExperimentConfig",
           "ExperimentReport", "Row", "claim", "get_experiment", "register"]
