"""Observers: what a run records, each on its own schedule, never inside the stepper.

An observer is called by the driver (:class:`hhld.dynamics.driver.Simulation`) after a step
whenever ``state.step % every == 0``, with the post-step state and the run context. Memory
stays bounded for long runs: series are thinned automatically (when a series reaches
``max_len`` entries every other entry is dropped and the recording stride doubles), and
moments are kept as running (Welford) statistics.

Built-ins: :class:`LossObserver`, :class:`ConsolidationObserver`, :class:`TrajectoryObserver`,
:class:`MomentsObserver`, :class:`TransitionObserver` (well-to-well transitions, first
passage times, escape-rate estimate).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from .._backend import to_numpy
from .._validation import check_int, check_nonnegative, check_real
from ..observables import consolidation_ratio

__all__ = [
    "Observer",
    "Series",
    "LossObserver",
    "ConsolidationObserver",
    "TrajectoryObserver",
    "MomentsObserver",
    "TransitionObserver",
]


class Series:
    """An append-only series with automatic thinning to at most ``max_len`` entries."""

    def __init__(self, max_len: int = 100_000):
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {max_len}")
        self.max_len = int(max_len)
        self.steps: list[int] = []
        self.values: list[Any] = []
        self.stride = 1
        self._seen = 0

    def append(self, step: int, value) -> None:
        if self._seen % self.stride == 0:
            self.steps.append(int(step))
            self.values.append(value)
            if len(self.steps) >= self.max_len:
                self.steps = self.steps[::2]
                self.values = self.values[::2]
                self.stride *= 2
        self._seen += 1

    def as_arrays(self):
        return np.asarray(self.steps), np.asarray(self.values)

    def state_dict(self):
        return dict(max_len=self.max_len, steps=list(self.steps), values=list(self.values), stride=self.stride,
                    seen=self._seen)

    def load_state_dict(self, d):
        self.max_len, self.steps, self.values = d["max_len"], list(d["steps"]), list(d["values"])
        self.stride, self._seen = d["stride"], d["seen"]


class Observer(ABC):
    """Base observer: ``every`` is the schedule in steps; subclasses implement
    :meth:`observe` and :meth:`result` (abstract: a subclass without them cannot be made)."""

    name = "observer"

    def __init__(self, every: int = 1):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = int(every)

    def start(self, state, ctx) -> None:  # called once before the first step of a run
        pass

    def due(self, step: int) -> bool:
        return step % self.every == 0

    @abstractmethod
    def observe(self, state, ctx) -> None:
        """Record what this observer measures from ``state`` at a due step."""

    def select(self, keep) -> None:
        """Called when the driver removes particles (``keep``: boolean mask of survivors)."""

    @abstractmethod
    def result(self) -> dict:
        """The recorded series, as arrays."""

    def state_dict(self) -> dict:
        return {k: (v.state_dict() if isinstance(v, Series) else v) for k, v in self.__dict__.items()
                if not callable(v) or isinstance(v, Series)}

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            cur = self.__dict__.get(k)
            if isinstance(cur, Series):
                cur.load_state_dict(v)
            else:
                self.__dict__[k] = v


class LossObserver(Observer):
    """Records the ensemble's loss: mean and standard deviation (``per_particle=True``
    also keeps every particle's value, for small ensembles)."""

    name = "loss"

    def __init__(self, every: int = 1, per_particle: bool = False, max_len: int = 100_000):
        super().__init__(every)
        self.per_particle = per_particle
        self.mean = Series(max_len)
        self.std = Series(max_len)
        self.all = Series(max_len) if per_particle else None

    def observe(self, state, ctx):
        v = to_numpy(ctx.landscape.value(state.theta)).astype(np.float64)
        self.mean.append(state.step, float(v.mean()))
        self.std.append(state.step, float(v.std()))
        if self.all is not None:
            self.all.append(state.step, v.copy())

    def result(self):
        steps, mean = self.mean.as_arrays()
        out = {"steps": steps, "mean": mean, "std": self.std.as_arrays()[1]}
        if self.all is not None:
            out["per_particle"] = self.all.as_arrays()[1]
        return out


class ConsolidationObserver(Observer):
    """Records the documents' ``C = ||grad L||^2 / (D d)`` per particle, summarised as the
    ensemble mean of ``||grad L||^2`` over ``D d`` (numerator averaged first), the median
    of the per-particle C, and (``per_particle=True``) every value."""

    name = "consolidation"

    def __init__(self, every: int = 1, per_particle: bool = False, max_len: int = 100_000):
        super().__init__(every)
        self.per_particle = per_particle
        self.mean = Series(max_len)
        self.median = Series(max_len)
        self.all = Series(max_len) if per_particle else None

    def start(self, state, ctx):
        # C = ||grad L||^2 / (D d) needs D > 0: refused before the first step (was: a ValueError at the first step
        # the observer was due, after the steps before it had run)
        if not ctx.D > 0:
            raise ValueError(f"ConsolidationObserver needs D > 0 (C = ||grad L||^2 / (D d)), got D={ctx.D!r}: "
                             "run without it, or with D > 0")

    def observe(self, state, ctx):
        # grad L itself (every state carries it): the underdamped state's total force would add
        # the entropy coupling, and C is ||grad L||^2 / (D d)
        c = to_numpy(consolidation_ratio(state.grad, ctx.D)).astype(np.float64)
        self.mean.append(state.step, float(c.mean()))
        self.median.append(state.step, float(np.median(c)))
        if self.all is not None:
            self.all.append(state.step, c.copy())

    def result(self):
        steps, mean = self.mean.as_arrays()
        out = {"steps": steps, "mean": mean, "median": self.median.as_arrays()[1]}
        if self.all is not None:
            out["per_particle"] = self.all.as_arrays()[1]
        return out


class TrajectoryObserver(Observer):
    """Thinned positions of the first ``max_particles`` particles (``(T, P, d)``)."""

    name = "trajectory"

    def __init__(self, every: int = 1, max_particles: int = 16, max_len: int = 10_000):
        super().__init__(every)
        self.max_particles = check_int("max_particles", max_particles, minimum=1)
        self.frames = Series(max_len)

    def start(self, state, ctx):
        if not self.frames.steps:
            self.frames.append(state.step, to_numpy(state.theta[: self.max_particles]).copy())

    def observe(self, state, ctx):
        self.frames.append(state.step, to_numpy(state.theta[: self.max_particles]).copy())

    def result(self):
        steps, frames = self.frames.as_arrays()
        return {"steps": steps, "theta": frames}


class MomentsObserver(Observer):
    """Running mean and covariance (Welford) of positions and gradients over particles and
    time, after ``burn_in`` steps: the stationary moments of long runs in O(d^2) memory."""

    name = "moments"

    def __init__(self, every: int = 1, burn_in: int = 0):
        super().__init__(every)
        self.burn_in = check_int("burn_in", burn_in, minimum=0)
        self.n = 0
        self.mean = None
        self.m2 = None

    def observe(self, state, ctx):
        if state.step <= self.burn_in:
            return
        z = np.concatenate([to_numpy(state.theta), to_numpy(state.grad)], axis=1).astype(np.float64)
        nb = z.shape[0]
        mb = z.mean(0)
        cb = (z - mb).T @ (z - mb)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, cb
            return
        n = self.n + nb
        delta = mb - self.mean
        self.m2 = self.m2 + cb + np.outer(delta, delta) * self.n * nb / n
        self.mean = self.mean + delta * nb / n
        self.n = n

    def result(self):
        if self.mean is None:
            return {"n": 0}
        d = self.mean.size // 2
        cov = self.m2 / max(self.n - 1, 1)
        return {
            "n": self.n,
            "mean_theta": self.mean[:d],
            "mean_grad": self.mean[d:],
            "cov_theta": cov[:d, :d],
            "cov_grad": cov[d:, d:],
            "cov_theta_grad": cov[:d, d:],
        }


class TransitionObserver(Observer):
    """Well-to-well transitions along coordinate ``axis`` with hysteresis: a particle is
    in the left well once ``theta[axis] < -core`` and in the right well once
    ``theta[axis] > core`` (``core`` in (0, 1], wells at +-1 for the built-in double wells;
    ``left``/``right`` override the two thresholds).

    Records the number of transitions, each particle's first-passage time out of its
    starting well, and the escape-rate estimate ``k = transitions / (time spent in the
    wells)`` (exponential waiting times: the maximum-likelihood rate, with standard error
    ``k / sqrt(transitions)``).
    """

    name = "transitions"

    def __init__(self, every: int = 1, axis: int = 0, core: float = 0.5, left: float | None = None,
                 right: float | None = None, max_events: int = 100_000):
        super().__init__(every)
        self.axis = check_int("axis", axis, minimum=0)
        self.left = -check_nonnegative("core", core) if left is None else check_real("left", left)
        self.right = abs(core) if right is None else check_real("right", right)
        if not self.left <= self.right:
            raise ValueError(f"need left <= right (the barrier region between the wells), got left={self.left!r}, "
                             f"right={self.right!r}")
        self.max_events = int(max_events)
        self.side = None
        self.start_side = None
        self.first_passage = None
        self.count = 0
        self.occupancy_time = 0.0
        self.last_time = None
        self.events: list[tuple[int, int, int]] = []  # (step, particle, new side)

    def _sides(self, theta):
        x = to_numpy(theta[:, self.axis]).astype(np.float64)
        s = np.zeros(x.shape, dtype=np.int8)
        s[x < self.left] = -1
        s[x > self.right] = 1
        return s

    def start(self, state, ctx):
        d = state.theta.shape[-1]
        if self.axis >= d:
            raise ValueError(f"TransitionObserver: axis={self.axis} but the particles have d={d} coordinates "
                             f"(axis must be 0 to {d - 1})")
        if self.side is None:
            self.side = self._sides(state.theta)
            self.start_side = self.side.copy()
            self.first_passage = np.full(self.side.shape, np.nan)
            self.last_time = state.time

    def observe(self, state, ctx):
        s = self._sides(state.theta)
        n_in = int((self.side != 0).sum())
        self.occupancy_time += n_in * (state.time - self.last_time)
        self.last_time = state.time
        changed = (s != 0) & (self.side != 0) & (s != self.side)
        entered = (s != 0) & (self.side == 0)
        if entered.any():  # particles that started on the barrier get a well
            self.side[entered] = s[entered]
            self.start_side[entered & (self.start_side == 0)] = s[entered & (self.start_side == 0)]
        if changed.any():
            idx = np.flatnonzero(changed)
            self.count += idx.size
            first = idx[np.isnan(self.first_passage[idx])]
            self.first_passage[first] = state.time
            if len(self.events) < self.max_events:
                self.events.extend((int(state.step), int(i), int(s[i])) for i in idx[: self.max_events - len(self.events)])
            self.side[idx] = s[idx]

    def select(self, keep):
        if self.side is not None:
            self.side, self.start_side = self.side[keep], self.start_side[keep]
            self.first_passage = self.first_passage[keep]

    def rate(self) -> tuple[float, float]:
        """Escape rate out of a well (per unit time) and its standard error. With no transition the rate is 0 and
        its standard error undefined (NaN): one warning gives the one-sided 95 % upper bound ``3/occupancy``
        (Poisson); with no time spent in a well both are NaN, with a warning (until 2026-12-02 silently)."""
        import warnings

        if self.occupancy_time <= 0:
            warnings.warn("TransitionObserver.rate: no particle was in a well (occupancy time 0): the rate is "
                          "undefined (NaN); run longer or check the wells", RuntimeWarning, stacklevel=2)
            return math.nan, math.nan
        k = self.count / self.occupancy_time
        if not self.count:
            warnings.warn(f"TransitionObserver.rate: no transition in an occupancy time of {self.occupancy_time:.4g}: "
                          f"the rate is 0 with no standard error (NaN); 95 % upper bound "
                          f"{3.0 / self.occupancy_time:.4g}", RuntimeWarning, stacklevel=2)
            return k, math.nan
        return k, k / math.sqrt(self.count)

    def result(self):
        k, se = self.rate()
        return {
            "transitions": self.count,
            "rate": k,
            "rate_stderr": se,
            "first_passage": self.first_passage,
            "events": np.asarray(self.events, dtype=np.int64).reshape(-1, 3),
        }


ObserverFactory = Callable[[], Observer]
